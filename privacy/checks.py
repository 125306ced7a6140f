"""Argument validation shared across the privacy package (one message style)."""

from __future__ import annotations

import math

from secagg_privacy.errors import PrivacyParameterError


def positive(name: str, value: object, *, upper: float = math.inf) -> float:
    """``value`` as a float in (0, upper]; bools, NaN and infinities refused."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PrivacyParameterError(
            f"{name} must be a finite number in (0, {upper:g}]; got {value!r}"
        )
    if not 0 < value <= upper:
        raise PrivacyParameterError(f"{name} must be in (0, {upper:g}]; got {value!r}")
    return float(value)


def non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PrivacyParameterError(f"{name} must be a non-negative integer; got {value!r}")
    return value
