"""micropay's exceptions: one root, mixed with the builtin each one resembles.

Catch :class:`MicropayError` to catch anything the toolkit raises on purpose::

    MicropayError
    └── ArtifactError (LookupError)      a shipped contract artifact is missing or unreadable

Later modules add their branches here, so a reader finds the whole tree in one place.
"""

from __future__ import annotations


class MicropayError(Exception):
    """Root of every exception micropay raises deliberately."""


class ArtifactError(MicropayError, LookupError):
    """A compiled contract artifact shipped with the package is missing or malformed."""
