"""Errors a user can cause. The CLI prints them as one line on stderr and exits with code 2."""


class BLTError(ValueError):
    """Bad input, bad config, missing or corrupt files: something the user can fix.

    The message says what is wrong and what to do about it.
    """


class ConfigError(BLTError):
    """A config value is invalid or inconsistent."""


class DataError(BLTError):
    """A data source or prepared data directory is unusable."""


class CheckpointError(BLTError):
    """A checkpoint or run directory is missing, of the wrong kind, truncated or corrupt."""
