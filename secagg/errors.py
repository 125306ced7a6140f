"""The one error tree of the secure-aggregation engine.

Messages read ``"<name> must be <constraint>; got <public value>"`` and never
carry a key, seed, share or plaintext.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Root of every error raised by :mod:`secagg`."""


class ParameterError(SecAggError, ValueError):
    """A configuration or argument is invalid (bad parameters, insecure presets)."""


class DecodeError(SecAggError, ValueError):
    """Wire data is malformed, oversized, truncated or of an unknown type/version."""


class IntegrityError(SecAggError):
    """An AEAD tag, MAC, signature or commitment did not verify.

    Deliberately opaque: the message never says which check failed or why.
    """

    def __init__(self, what: str = "authenticated data") -> None:
        super().__init__(f"{what} failed verification")


class ProtocolAbort(SecAggError):
    """A peer misbehaved or the round cannot safely continue; nothing is released."""


class UnexpectedPhaseError(ProtocolAbort):
    """A message or call arrived in a phase that does not accept it."""


class InsufficientParticipantsError(ProtocolAbort):
    """Fewer parties than the threshold remain; the round releases nothing."""


class InconsistentViewError(ProtocolAbort):
    """Parties disagree about who is active/dropped, or a request would reveal too much."""


class ShareReuseError(ProtocolAbort):
    """A secret-dependent step was asked to run twice for the same (session, round, target)."""


class UnknownSchemeError(ParameterError):
    """The requested aggregation scheme does not exist."""
