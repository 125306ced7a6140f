"""The privacy error tree.

Messages read ``"<name> must be <constraint>; got <public value>"``. They never
carry training data, noise, gradients or a random source's state.
"""

from __future__ import annotations


class PrivacyError(Exception):
    """Root of every error raised by :mod:`privacy`."""


class BudgetExceededError(PrivacyError):
    """A round would push a client past its privacy budget (or nobody is left to train)."""


class InsecureConfigurationError(PrivacyError):
    """A configuration would silently weaken the DP guarantee (seeded noise, unsupported layer)."""


class LedgerIntegrityError(PrivacyError):
    """The privacy ledger was edited, reordered or truncated: the hash chain does not verify."""


class LedgerDuplicateError(PrivacyError):
    """An entry for the same (client, round, kind) is already in the ledger."""


class PrivacyParameterError(PrivacyError, ValueError):
    """A parameter is out of range or inconsistent (bad σ, q, δ, budget, ...)."""


class AccountingMismatchError(LedgerIntegrityError):
    """A client's own record of the DP mechanisms it ran differs from what the ledger charged."""
