"""Errors a user can cause: bad config, missing or malformed files. The CLI prints these without a traceback."""

from dataclasses import fields
from typing import Any


class LitLLMError(Exception):
    """Base class of errors that a user can fix; the message names the file, key or value at fault."""


class ConfigError(LitLLMError, ValueError):
    """An invalid configuration value or key."""


class DataError(LitLLMError, ValueError):
    """Missing, malformed or inconsistent data files."""


class CheckpointError(LitLLMError, ValueError):
    """A checkpoint that is missing, unreadable or of the wrong kind."""


def from_known_keys(cls: type, values: dict[str, Any], where: str) -> Any:
    """`cls(**values)` for a dataclass, or one ConfigError naming `where`, the unknown keys and the valid ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    return cls(**values)
