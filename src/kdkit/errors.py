"""User-facing errors.

Anything a user can cause (a bad recipe, a missing file, mismatched models) raises a :class:`KdkitError`
subclass whose message is one line naming the key, the bad value and what would be valid. The CLI prints
that line and exits with code 2; programming errors stay ordinary exceptions with tracebacks.
"""


class KdkitError(Exception):
    """Base class of every error a user can fix by changing their input."""


class ConfigError(KdkitError):
    """A recipe or argument is invalid."""


class DataError(KdkitError):
    """A dataset or data file cannot be used."""


class ModelError(KdkitError):
    """A model cannot be loaded or does not fit the recipe (depth, vocabulary, labels)."""


class CacheError(KdkitError):
    """A teacher cache is stale, corrupt or incomplete."""


class NumericalError(KdkitError):
    """Training produced a non-finite (NaN or infinite) loss."""
