"""Fixed-point encoding of float vectors into the ring ℤ_{2^w} used for masking.

A client clips every coordinate to ``[-B, B]``, multiplies by the scale ``Δ``
and rounds stochastically (unbiased, with the CSPRNG) to an integer ``q`` with
``|q| ≤ M``; it submits ``q mod 2^w``. The ring width ``w`` and ``Δ`` are chosen
at set-up so that the sum of ``max_clients`` encodings, ``|Σq| ≤ max_clients·M``,
never wraps around ``2^(w-1)``: the signed lift of the masked sum is exact.

Error per coordinate of a sum over ``c`` contributors (against the exact sum of
the *clipped* inputs): stochastic rounding moves each value by less than one
unit ``1/Δ``; float64 scaling and the final conversion add at most a few ulps::

    error_bound(c) = c · (1 + M·2^-52) / Δ  +  c · B · 2^-52
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from secagg.errors import ParameterError
from secagg.rand import Csprng

WIDTHS = (16, 32, 64)  # the wire dtype is the ring: uint16 / uint32 / uint64
_MAX_UNITS_64 = 1 << 52  # keep scaled values on float64's integer grid


def _dtype(width: int) -> np.dtype:
    return np.dtype(f"uint{width}")


@dataclasses.dataclass(frozen=True)
class FixedPointEncoding:
    """Validated public encoding parameters.

    Attributes:
        width: ring bits w (16, 32 or 64); also the wire word size.
        value_bound: B, the clipping bound of every submitted coordinate.
        max_clients: the largest number of vectors that may be summed.
        max_units: M, the largest encoded magnitude of one coordinate.
    """

    width: int
    value_bound: float
    max_clients: int
    max_units: int

    def __post_init__(self) -> None:
        if self.width not in WIDTHS:
            raise ParameterError(f"width must be one of {WIDTHS}; got {self.width}")
        if not (math.isfinite(self.value_bound) and self.value_bound > 0):
            raise ParameterError(f"value_bound must be finite and > 0; got {self.value_bound}")
        if self.max_clients < 1:
            raise ParameterError(f"max_clients must be ≥ 1; got {self.max_clients}")
        if self.max_units < 1:
            raise ParameterError(f"max_units must be ≥ 1; got {self.max_units}")
        if self.max_clients * self.max_units > 2 ** (self.width - 1) - 1:
            raise ParameterError(
                f"max_clients·max_units must be < 2^{self.width - 1} so the sum cannot wrap; "
                f"got {self.max_clients}·{self.max_units}"
            )

    @classmethod
    def largest(cls, width: int, *, value_bound: float, max_clients: int) -> FixedPointEncoding:
        """The finest scale for ``width`` at which ``max_clients`` vectors cannot wrap."""
        if width not in WIDTHS:
            raise ParameterError(f"width must be one of {WIDTHS}; got {width}")
        if max_clients < 1:
            raise ParameterError(f"max_clients must be ≥ 1; got {max_clients}")
        units = (2 ** (width - 1) - 1) // max_clients
        if width == 64:
            units = min(units, _MAX_UNITS_64)
        if units < 1:
            raise ParameterError(
                f"max_clients must be < 2^{width - 1} for a {width}-bit ring; got {max_clients}"
            )
        return cls(width=width, value_bound=value_bound, max_clients=max_clients, max_units=units)

    @classmethod
    def for_precision(
        cls, *, value_bound: float, max_clients: int, precision: float
    ) -> FixedPointEncoding:
        """The narrowest ring whose worst-case error for ``max_clients`` is ≤ ``precision``.

        Raises:
            ParameterError: not even a 64-bit ring meets ``precision``.
        """
        if not precision > 0:
            raise ParameterError(f"precision must be > 0; got {precision}")
        best = None
        for width in WIDTHS:
            enc = cls.largest(width, value_bound=value_bound, max_clients=max_clients)
            best = enc
            if enc.error_bound(max_clients) <= precision:
                return enc
        raise ParameterError(
            f"precision must be ≥ {best.error_bound(max_clients) if best else 0:.3g} for "
            f"{max_clients} clients with value_bound {value_bound}; got {precision}"
        )

    @property
    def scale(self) -> float:
        """Δ: encoded units per unit of value."""
        return self.max_units / self.value_bound

    @property
    def dtype(self) -> np.dtype:
        return _dtype(self.width)

    @property
    def bytes_per_value(self) -> int:
        return self.width // 8

    def error_bound(self, contributors: int) -> float:
        """Worst-case absolute error per coordinate of a decoded sum of ``contributors``."""
        c = max(int(contributors), 0)
        return c * (1.0 + self.max_units * 2.0**-52) / self.scale + c * self.value_bound * 2.0**-52

    def encode(self, vector: np.ndarray, *, rng: Csprng) -> np.ndarray:
        """Clip, scale and stochastically round ``vector`` into the ring.

        Security: the output is a plaintext update; it must be masked before it leaves.
        """
        values = np.clip(np.asarray(vector, dtype=np.float64), -self.value_bound, self.value_bound)
        scaled = values * self.scale
        low = np.floor(scaled)
        # 32-bit uniforms: the rounding bias is below 2^-32 units, far inside the bound.
        draws = np.frombuffer(rng.random_bytes(4 * scaled.size), dtype="<u4")
        up = draws.astype(np.float64) * 2.0**-32 < (scaled - low)
        units = np.clip(low + up, -self.max_units, self.max_units).astype(np.int64)
        return units.astype(self.dtype)  # two's complement: negative units wrap mod 2^w

    def decode(self, total: np.ndarray) -> np.ndarray:
        """The float64 sum from a ring sum (signed lift, then unscale)."""
        if total.dtype != self.dtype:
            raise ParameterError(f"ring sum dtype must be {self.dtype}; got {total.dtype}")
        signed = total.view(np.dtype(f"int{self.width}"))
        return signed.astype(np.float64) / self.scale

    def describe(self) -> dict[str, object]:
        return {
            "ring_bits": self.width,
            "wire_dtype": str(self.dtype),
            "bytes_per_param": self.bytes_per_value,
            "scale": self.scale,
            "max_units": self.max_units,
            "value_bound": self.value_bound,
            "max_clients": self.max_clients,
            "error_bound_max_clients": self.error_bound(self.max_clients),
        }
