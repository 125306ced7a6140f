"""CKKS parameters for sum-only threshold aggregation, and their error/overflow budget.

Only additions are ever evaluated, so there is no relinearization, no Galois key
and no rescaling: the scale Δ can be raised until large smudging noise fits.

Error model (per released coordinate). The fused decryption is

    D·c0 + Σⱼ wⱼ·dⱼ = D·(Δ·m + e_ct) + Σⱼ wⱼ·eⱼ          (wⱼ = D·λⱼ integers)

decoded at scale D·Δ, so the coordinate error is (e_ct + Σ λⱼ eⱼ)/Δ mapped
through the canonical embedding. A polynomial with i.i.d. coefficients of
variance V has slots whose real and imaginary parts have variance N·V/2, so

    std = √(N·V/2)/Δ,   V = max_S Σ_{j∈S} λⱼ²·σ² + K·v_client

and ``noise_bound = z·std`` with z the two-sided Gaussian quantile for a
per-coordinate failure probability of 2^-40. Released values are rounded to
multiples of the requested precision p, so ``error_bound = noise_bound + p/2``
and a configuration is refused unless ``noise_bound ≤ p/2``.

Overflow: each coefficient of the encoded sum is at most √2·K·B·Δ (complex
packing puts two reals of magnitude ≤ B in one slot), and the fused value must
stay inside (−q/2, q/2) after the factor D, with 13σ of noise margin.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction
from functools import cached_property
from statistics import NormalDist

from secagg.errors import ParameterError

# SEAL's 128-bit classical security limits on the total coefficient-modulus bits
# (HomomorphicEncryption.org standard, as enforced by SEAL's CoeffModulus::MaxBitCount).
SEAL_128_BIT_LIMITS: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}
FAILURE_LOG2 = 40  # per-coordinate probability that the noise exceeds its bound
FRESH_NOISE_STD = 3.2  # SEAL's error distribution (centred binomial, σ ≈ 3.19)
MAX_COMMITTEE = 16  # subsets are enumerated exactly to get the Lagrange constants
MAX_PRIME_BITS = 48  # residues travel in 6 bytes; small-weight products stay in uint64
MAX_WEIGHT = 1 << 16  # |D·λ| per limb; larger weights are split (see residues.mul_small)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named, frozen choice of ring degree, prime sizes and smudging width."""

    name: str
    poly_degree: int
    prime_bits: tuple[int, ...]  # data primes then the special (key-level) prime
    smudging_bits: int  # σ_smudge = 2^smudging_bits
    insecure: bool = False

    @property
    def data_bits(self) -> int:
        return sum(self.prime_bits[:-1])

    @property
    def total_bits(self) -> int:
        return sum(self.prime_bits)


SUM_N4096 = Preset("SUM_N4096", 4096, (48, 45, 16), 40)
SUM_N8192 = Preset("SUM_N8192", 8192, (48, 48, 48, 60), 40)
TEST_INSECURE_N1024 = Preset("TEST_INSECURE_N1024", 1024, (48, 45, 16), 40, insecure=True)
TEST_INSECURE_N512 = Preset("TEST_INSECURE_N512", 512, (48, 45, 16), 40, insecure=True)

PRESETS: dict[str, Preset] = {
    p.name: p for p in (SUM_N4096, SUM_N8192, TEST_INSECURE_N1024, TEST_INSECURE_N512)
}


def check_preset(preset: Preset) -> None:
    """Refuse presets that break SEAL's 128-bit table or the residue format."""
    n = preset.poly_degree
    if n < 256 or n & (n - 1):
        raise ParameterError(f"poly_degree must be a power of two ≥ 256; got {n}")
    if len(preset.prime_bits) < 2:
        raise ParameterError("prime_bits must list ≥ 1 data prime and the special prime")
    if any(not 2 <= b <= 60 for b in preset.prime_bits):
        raise ParameterError(f"prime_bits must each be in [2, 60]; got {preset.prime_bits}")
    if any(b > MAX_PRIME_BITS for b in preset.prime_bits[:-1]):
        raise ParameterError(
            f"data primes must have ≤ {MAX_PRIME_BITS} bits; got {preset.prime_bits[:-1]}"
        )
    if not 30 <= preset.smudging_bits <= 60:
        raise ParameterError(f"smudging_bits must be in [30, 60]; got {preset.smudging_bits}")
    if preset.insecure:
        if not preset.name.startswith("TEST_INSECURE_"):
            raise ParameterError(
                f"an insecure preset's name must start with TEST_INSECURE_; got {preset.name}"
            )
        return
    limit = SEAL_128_BIT_LIMITS.get(n)
    if limit is None:
        raise ParameterError(
            f"poly_degree must be one of {sorted(SEAL_128_BIT_LIMITS)} for 128-bit security; "
            f"got {n}"
        )
    if preset.total_bits > limit:
        raise ParameterError(
            f"total modulus bits must be ≤ {limit} at N={n} for 128-bit security; "
            f"got {preset.total_bits}"
        )


@dataclasses.dataclass(frozen=True)
class LagrangeConstants:
    """Integer Lagrange weights at zero for every t-subset of points 1..n.

    Holders do not know which t of them will answer, so each returns
    c1·ŝⱼ + eⱼ and the combiner applies wⱼ = D·λⱼ, with D the least common
    denominator over all subsets: the weights are small integers, so the
    smudging noise is scaled by |wⱼ| instead of by a random field element.
    """

    committee: int
    threshold: int
    denominator: int  # D
    max_weight: int  # max |wⱼ|
    max_lambda_sq: float  # max over subsets of Σ λⱼ²

    @classmethod
    def compute(cls, committee: int, threshold: int) -> LagrangeConstants:
        if not 1 <= threshold <= committee <= MAX_COMMITTEE:
            raise ParameterError(
                f"threshold must satisfy 1 ≤ t ≤ committee ≤ {MAX_COMMITTEE}; "
                f"got t={threshold}, committee={committee}"
            )
        denominator = 1
        sq = 0.0
        lambdas = []
        for subset in itertools.combinations(range(1, committee + 1), threshold):
            lam = lagrange_fractions(subset)
            lambdas.append(lam)
            sq = max(sq, float(sum(x * x for x in lam)))
            for x in lam:
                denominator = math.lcm(denominator, x.denominator)
        max_weight = max(abs(int(x * denominator)) for lam in lambdas for x in lam)
        return cls(committee, threshold, denominator, max_weight, sq)

    def weights(self, points: tuple[int, ...]) -> tuple[int, ...]:
        """wⱼ = D·λⱼ for the given share points (exact integers)."""
        if len(points) != self.threshold:
            raise ParameterError(f"points must number {self.threshold}; got {len(points)}")
        out = []
        for x in lagrange_fractions(points):
            w = x * self.denominator
            if w.denominator != 1:
                raise ParameterError("points must be within the committee's 1..n")
            out.append(int(w))
        return tuple(out)


def lagrange_fractions(points: tuple[int, ...]) -> list[Fraction]:
    """λⱼ = Π_{m≠j} xₘ/(xₘ − xⱼ) as exact rationals."""
    if len(set(points)) != len(points) or any(x < 1 for x in points):
        raise ParameterError("points must be distinct positive integers")
    out = []
    for j, xj in enumerate(points):
        lam = Fraction(1)
        for m, xm in enumerate(points):
            if m != j:
                lam *= Fraction(xm, xm - xj)
        out.append(lam)
    return out


def _z_score() -> float:
    return NormalDist().inv_cdf(1 - 2.0 ** -(FAILURE_LOG2 + 1))


@dataclasses.dataclass(frozen=True)
class CkksParameters:
    """Validated public parameters of one threshold-CKKS federation.

    Attributes:
        preset: ring degree, primes and smudging width.
        primes: the actual RNS primes (data primes, then the special prime).
        committee, threshold: n key holders, any t of whom decrypt.
        max_clients: K, the largest number of summed contributions.
        value_bound: B, every client coordinate satisfies |x| ≤ B.
        precision: p, released values are multiples of p with error ≤ p.
        scale_bits: log2 Δ.
    """

    preset: Preset
    primes: tuple[int, ...]
    committee: int
    threshold: int
    max_clients: int
    value_bound: float
    precision: float
    scale_bits: int

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if len(self.primes) != len(self.preset.prime_bits):
            raise ParameterError("primes must match the preset's prime_bits")
        if any(
            p.bit_length() != b for p, b in zip(self.primes, self.preset.prime_bits, strict=True)
        ):
            raise ParameterError("primes must have the preset's bit sizes")
        if any(p % (2 * self.preset.poly_degree) != 1 for p in self.primes):
            raise ParameterError("primes must be 1 mod 2N (NTT-friendly)")
        if not 1 <= self.max_clients < 1 << 15:
            raise ParameterError(f"max_clients must be in [1, 2^15); got {self.max_clients}")
        if not (self.value_bound > 0 and math.isfinite(self.value_bound)):
            raise ParameterError(f"value_bound must be finite and > 0; got {self.value_bound}")
        if not (self.precision > 0 and math.isfinite(self.precision)):
            raise ParameterError(f"precision must be finite and > 0; got {self.precision}")
        _ = self.lagrange  # validates committee/threshold
        if self.lagrange.max_weight >= 1 << 62:
            raise ParameterError("committee is too large for integer Lagrange weights")
        if self.noise_bound > self.precision / 2:
            raise ParameterError(
                f"noise bound must be ≤ precision/2 = {self.precision / 2:.3g}; got "
                f"{self.noise_bound:.3g} (N={self.poly_degree}, Δ=2^{self.scale_bits}, "
                f"σ=2^{self.preset.smudging_bits}, t={self.threshold}, n={self.committee})"
            )
        needed = self.max_clients * self.value_bound
        if needed > self.max_sum:
            raise ParameterError(
                f"max_clients·value_bound must be ≤ the largest representable sum "
                f"{self.max_sum:.6g}; got {needed:.6g}"
            )

    @property
    def poly_degree(self) -> int:
        return self.preset.poly_degree

    @property
    def data_primes(self) -> tuple[int, ...]:
        return self.primes[:-1]

    @property
    def scale(self) -> float:
        return float(2.0**self.scale_bits)

    @property
    def slots_reals(self) -> int:
        """Reals per ciphertext: N/2 complex slots, two reals each."""
        return self.poly_degree

    @cached_property
    def lagrange(self) -> LagrangeConstants:
        return LagrangeConstants.compute(self.committee, self.threshold)

    @property
    def coefficient_variance(self) -> float:
        return _coefficient_variance(
            self.preset, self.primes[-1], self.lagrange, self.committee, self.max_clients
        )

    @property
    def noise_bound(self) -> float:
        """High-probability (1 − 2^-40 per coordinate) bound on the decoded noise."""
        std = math.sqrt(self.poly_degree * self.coefficient_variance / 2) / self.scale
        float_slack = self.max_clients * self.value_bound * self.poly_degree * 2.0**-50
        return _z_score() * std + float_slack

    @property
    def error_bound(self) -> float:
        """Worst-case (w.h.p.) |released − exact sum| per coordinate, rounding included."""
        return self.noise_bound + self.precision / 2

    @property
    def data_modulus(self) -> int:
        return math.prod(self.data_primes)

    @property
    def max_sum(self) -> float:
        """Largest |Σ x| per coordinate that decodes without wrapping around q."""
        d = self.lagrange.denominator
        noise_margin = 13 * math.sqrt(self.coefficient_variance) * d
        half_q = self.data_modulus // 2
        return (half_q - noise_margin) / (math.sqrt(2) * d * self.scale)

    @property
    def bytes_per_param(self) -> float:
        """Upload bytes per real (two polynomials, one 6-byte residue per data prime)."""
        return float(2 * sum(residue_width(q) for q in self.data_primes))

    def describe(self) -> dict[str, object]:
        return {
            "preset": self.preset.name,
            "insecure": self.preset.insecure,
            "poly_degree": self.poly_degree,
            "prime_bits": list(self.preset.prime_bits),
            "total_modulus_bits": self.preset.total_bits,
            "security": "none (test only)" if self.preset.insecure else "128-bit (SEAL table)",
            "scale_bits": self.scale_bits,
            "smudging_sigma_log2": self.preset.smudging_bits,
            "committee": self.committee,
            "threshold": self.threshold,
            "lagrange_denominator": self.lagrange.denominator,
            "max_clients": self.max_clients,
            "value_bound": self.value_bound,
            "precision": self.precision,
            "noise_bound": self.noise_bound,
            "error_bound": self.error_bound,
            "max_sum": self.max_sum,
            "bytes_per_param": self.bytes_per_param,
            "packing": "complex (2 reals per slot)",
        }


def client_noise_variance(poly_degree: int, committee: int, special_prime: int) -> float:
    """Per-coefficient variance of one fresh public-key encryption at the data level."""
    n, k = poly_degree, committee
    sig2 = FRESH_NOISE_STD**2
    # e·u + e0 + s·e1 at the key level, with e = Σeᵢ and s = Σsᵢ (ternary, var 2/3 each)
    key_level = 2 * n * k * (2 / 3) * sig2 + sig2
    # SEAL divides by the special prime and rounds (c0, c1); the client rounds Δ·m
    rounding = 1 / 12 + n * k * (2 / 3) / 12 + 1 / 12
    return key_level / special_prime**2 + rounding


def _coefficient_variance(
    preset: Preset, special: int, lag: LagrangeConstants, committee: int, clients: int
) -> float:
    sigma = 2.0**preset.smudging_bits
    fresh = client_noise_variance(preset.poly_degree, committee, special)
    return lag.max_lambda_sq * sigma**2 + clients * fresh


def residue_width(prime: int) -> int:
    """Bytes per residue on the wire for ``prime``."""
    return (prime.bit_length() + 7) // 8


def smallest_scale_bits(
    preset: Preset,
    primes: tuple[int, ...],
    *,
    committee: int,
    threshold: int,
    max_clients: int,
    value_bound: float,
    precision: float,
) -> int:
    """The smallest log2 Δ meeting ``precision`` (leaves the most overflow headroom)."""
    lag = LagrangeConstants.compute(committee, threshold)
    variance = _coefficient_variance(preset, primes[-1], lag, committee, max_clients)
    std_coeff = math.sqrt(preset.poly_degree * variance / 2)
    float_slack = max_clients * value_bound * preset.poly_degree * 2.0**-50
    target = precision / 2 - float_slack
    if target <= 0:
        raise ParameterError(f"precision must exceed float64 resolution; got {precision}")
    return max(1, math.ceil(math.log2(_z_score() * std_coeff / target)))
