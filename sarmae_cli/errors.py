"""Typed exceptions raised by the library; the CLI turns them into one-line errors.

The exit code follows from the class (`exit_code`), never from the command that raised it:
2 (`UsageError` and its subclasses) for anything the user can fix on the command line
(a missing or unreadable path named on it, a bad option value or combination, an output name
with the wrong extension or that exists, an empty input folder, weights of the wrong task or
band count for the input); 1 for a failure during the work (a damaged, unsupported or unsafe
file, a scene that cannot be decoded, missing shipped weights). A class that is both (e.g.
`WeightsNotFoundError`) sets its code itself."""


class SarmaeError(Exception):
    """Base class for errors a user can act on. `exit_code` is what the CLI returns."""

    exit_code: int = 1


class UsageError(SarmaeError):
    """Invalid arguments or options (CLI exit code 2)."""

    exit_code = 2


class NotFoundError(UsageError):
    """A file or folder named on the command line does not exist or cannot be read (exit 2)."""


class WeightsError(SarmaeError):
    """A weights file is missing, unreadable, corrupted or of the wrong kind."""


class WeightsNotFoundError(WeightsError, NotFoundError):
    """A weights file named on the command line (or in a config) does not exist: exit 2, as for
    any missing input. Missing *shipped* weights stay a `WeightsError` (exit 1): the
    installation, not the command line, is at fault."""

    exit_code = 2


class WrongWeightsError(WeightsError, UsageError):
    """A readable weights file of the wrong kind for the command (a classifier given to
    `segment`): exit 2, the command line names the wrong file."""

    exit_code = 2


class UnsafeCheckpointError(WeightsError):
    """A pickled checkpoint asks for objects outside the allow-list; nothing was executed."""


class ArchitectureError(WeightsError):
    """A checkpoint does not fit the expected model architecture."""


class OutputExistsError(UsageError):
    """The destination exists and `--overwrite` was not given."""
