"""One place that turns a foreign config's problems into one-line CheckpointErrors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from blt.errors import BLTError, CheckpointError


@contextlib.contextmanager
def foreign_config(what: str) -> Iterator[None]:
    """Translate errors raised while reading ``what`` (e.g. "transformers BLT config"): a missing key, a
    value of the wrong type, or values our configs reject, each into a CheckpointError naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except KeyError as err:
        raise CheckpointError(f"{what} lacks {err.args[0]!r}") from None
    except BLTError as err:
        raise CheckpointError(f"{what} describes no model blt can build: {err}") from None
    except (TypeError, AttributeError, ValueError) as err:
        raise CheckpointError(f"{what} is malformed ({err})") from None
