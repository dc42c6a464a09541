"""Settings for the whole test session."""

from __future__ import annotations

import os
import shutil
import tempfile

_OWN_CACHE = "TORCHINDUCTOR_CACHE_DIR" not in os.environ


def pytest_configure(config):
    """The compiled tests write torch.compile's on-disk caches to a directory of this session's own, so that
    no graph compiled by an earlier run (other code, other shapes) is loaded in place of a fresh compile.
    A directory named in TORCHINDUCTOR_CACHE_DIR is used as it is."""
    if _OWN_CACHE:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="blt-tests-inductor-")


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ.pop("TORCHINDUCTOR_CACHE_DIR"), ignore_errors=True)
