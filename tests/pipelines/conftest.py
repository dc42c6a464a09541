"""The comparison runs on the baselines' micro data and entropy model."""

from tests.baselines.conftest import entropy_run, one_thread, text_data  # noqa: F401  (session fixtures, shared)
