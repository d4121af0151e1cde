"""Typed exceptions raised by the library; the CLI turns them into one-line errors."""


class SarmaeError(Exception):
    """Base class for errors a user can act on. `exit_code` is what the CLI returns."""

    exit_code: int = 1


class UsageError(SarmaeError):
    """Invalid arguments or options (CLI exit code 2)."""

    exit_code = 2


class WeightsError(SarmaeError):
    """A weights file is missing, unreadable, corrupted or of the wrong kind."""


class UnsafeCheckpointError(WeightsError):
    """A pickled checkpoint asks for objects outside the allow-list; nothing was executed."""


class ArchitectureError(WeightsError):
    """A checkpoint does not fit the expected model architecture."""


class OutputExistsError(UsageError):
    """The destination exists and `--overwrite` was not given."""
