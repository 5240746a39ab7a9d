"""Errors a user can cause: bad config, missing or malformed files. The CLI prints these without a traceback."""


class LitLLMError(Exception):
    """Base class of errors that a user can fix; the message names the file, key or value at fault."""


class ConfigError(LitLLMError, ValueError):
    """An invalid configuration value or key."""


class DataError(LitLLMError, ValueError):
    """Missing, malformed or inconsistent data files."""


class CheckpointError(LitLLMError, ValueError):
    """A checkpoint that is missing, unreadable or of the wrong kind."""
