"""The project's exception and warning tree.

Every error Encore raises on purpose derives from :class:`EncoreError`, so callers can catch the
whole family at once. Messages name the offending thing as ``name=value``, say what was expected
and, where there is one, the fix. The retrieval and ranking packages raise these same classes.
"""

from __future__ import annotations


class EncoreError(Exception):
    """Base class of every error raised on purpose by Encore."""


class InputError(EncoreError, ValueError):
    """A file, column, value or argument given by the user is missing or malformed."""


class AudioError(InputError):
    """An audio file cannot be decoded or is unusable for embedding (empty, NaN, too short)."""


class WeightsError(EncoreError):
    """Model weights are missing, unreachable, or do not fit the model."""


class MismatchError(EncoreError):
    """A saved artefact (store, index, model) was made with a different configuration."""


class EncoreWarning(UserWarning):
    """Something works, but not well; the message says what to do about it."""
