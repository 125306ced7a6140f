"""CKKS parameters for one-shot, key-additive aggregation, and their error/overflow budget.

Each client encrypts under its own fresh secret kᵢ; the released value is the
decryption of ``(Σᵢ c0ᵢ, a)`` under ``K = Σᵢ kᵢ``, i.e. ``Δ·Σmᵢ − Σeᵢ`` plus
each client's encoding rounding. No holder adds noise (there is no smudging), so
the error comes from the clients' fresh RLWE errors alone.

Error model (per released coordinate). K summed clients give coefficient noise
of variance ``V = K·(σ² + 1/12)`` (SEAL's error, σ ≈ 3.2, plus the rounding of
Δ·m to integers). A polynomial with i.i.d. coefficients of variance V has slots
whose real and imaginary parts have variance N·V/2, so

    std = √(N·V/2)/Δ,   noise_bound = z·std + float64 slack

with z the two-sided Gaussian quantile for a per-coordinate failure probability
of 2^-40. A configuration is refused unless ``noise_bound ≤ precision``; the
released :class:`~secagg.protocol.Aggregate` reports ``error_bound = noise_bound``.

Overflow: each coefficient of the encoded sum is at most √2·K·B·Δ (complex
packing puts two reals of magnitude ≤ B in one slot) and must stay inside
(−q/2, q/2) with 13σ of noise margin.

Which set may be opened: the *floor* ``max(min_clients, ⌈min_fraction·|cohort|⌉)``
is part of these parameters, so it is covered by the committee's signatures and
by every client's receipt; holders refuse a smaller set whatever the server says.
``min_clients`` is absolute (≥ 2, default 3): the server chooses the cohort, so a
fraction alone would let it pick a tiny cohort. A server colluding with f − 1
clients isolates one victim in a set of f, so ``min_clients`` must exceed the
number of colluding clients tolerated by at least one.

Which holders may collude with a malicious server: ``corrupt_holders`` = c. A
holder answers once per round, but when n − t holders may be offline an honest
holder cannot tell the server showed other holders another set. Two sets S₁, S₂
of one round are both opened iff 2t − c ≤ n, and then K_{S₁} − K_{S₂} is the key
sum of S₁ − S₂ (one victim's key). So t ≥ ⌈(n + c + 1)/2⌉ is required; 3-of-5
tolerates c = 0 (an honest-but-curious server), 7-of-9 tolerates c = 4.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

from secagg.errors import InconsistentViewError, ParameterError

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
MAX_PRIME_BITS = 48  # residues travel in 6 bytes; 2^15 of them sum in a uint64
MAX_COMMITTEE = 64


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named, frozen choice of ring degree and prime sizes.

    ``prime_bits`` is what SEAL receives: with one prime it is the data prime;
    with several, SEAL reserves the last as its special (key-switching) prime,
    which this scheme never uses but which counts against the security table.
    """

    name: str
    poly_degree: int
    prime_bits: tuple[int, ...]
    insecure: bool = False

    @property
    def data_prime_bits(self) -> tuple[int, ...]:
        return self.prime_bits if len(self.prime_bits) == 1 else self.prime_bits[:-1]

    @property
    def total_bits(self) -> int:
        return sum(self.prime_bits)


# One 48-bit prime at N=4096: 48 of the 109 bits the 128-bit table allows (wide margin);
# 6 bytes per parameter upload.
SUM_N4096 = Preset("SUM_N4096", 4096, (48,))
# Two 48-bit data primes for wide value ranges (12 bytes per parameter), 144 of 218 bits.
SUM_N8192 = Preset("SUM_N8192", 8192, (48, 48, 48))
TEST_INSECURE_N1024 = Preset("TEST_INSECURE_N1024", 1024, (48,), insecure=True)
TEST_INSECURE_N512 = Preset("TEST_INSECURE_N512", 512, (48,), insecure=True)

PRESETS: dict[str, Preset] = {
    p.name: p for p in (SUM_N4096, SUM_N8192, TEST_INSECURE_N1024, TEST_INSECURE_N512)
}


def check_preset(preset: Preset) -> None:
    """Refuse presets that break SEAL's 128-bit table or the residue format."""
    n = preset.poly_degree
    if n < 256 or n & (n - 1):
        raise ParameterError(f"poly_degree must be a power of two ≥ 256; got {n}")
    if not preset.prime_bits:
        raise ParameterError("prime_bits must list at least one prime")
    if any(not 20 <= b <= 60 for b in preset.prime_bits):
        raise ParameterError(f"prime_bits must each be in [20, 60]; got {preset.prime_bits}")
    if any(b > MAX_PRIME_BITS for b in preset.data_prime_bits):
        raise ParameterError(
            f"data primes must have ≤ {MAX_PRIME_BITS} bits; got {preset.data_prime_bits}"
        )
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


def _z_score() -> float:
    return NormalDist().inv_cdf(1 - 2.0 ** -(FAILURE_LOG2 + 1))


def coefficient_variance(clients: int) -> float:
    """Per-coefficient noise variance of a K-client sum (fresh errors + encoding rounding)."""
    return clients * (FRESH_NOISE_STD**2 + 1 / 12)


@dataclasses.dataclass(frozen=True)
class CkksParameters:
    """Validated public parameters of one threshold-CKKS federation.

    Attributes:
        preset: ring degree and primes.
        primes: the actual primes SEAL uses (data primes, then its special prime if any).
        committee, threshold: n key holders, any t of whom open a round (t > n/2).
        corrupt_holders: c, holders that may collude with a malicious server;
            requires 2t ≥ n + c + 1 (only one set per round can then be opened).
        max_clients: K, the largest number of summed contributions.
        value_bound: B, every client coordinate satisfies |x| ≤ B.
        precision: p, the largest acceptable error per coordinate.
        scale_bits: log2 Δ.
        min_fraction, min_clients: the floor on the size of an opened set and on the
            cohort (min_clients ≥ 2: a "sum" of one client is that client's update).
    """

    preset: Preset
    primes: tuple[int, ...]
    committee: int
    threshold: int
    max_clients: int
    value_bound: float
    precision: float
    scale_bits: int
    min_fraction: float = 0.5
    min_clients: int = 3
    corrupt_holders: int = 0

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
        if not 1 <= self.committee <= MAX_COMMITTEE:
            raise ParameterError(f"committee must be in [1, {MAX_COMMITTEE}]; got {self.committee}")
        if not (2 * self.threshold > self.committee and self.threshold <= self.committee):
            raise ParameterError(
                "threshold must satisfy n/2 < t ≤ n (against an honest-but-curious server); "
                f"got t={self.threshold}, n={self.committee}"
            )
        if not 0 <= self.corrupt_holders <= 2 * self.threshold - self.committee - 1:
            raise ParameterError(
                "corrupt_holders must be in [0, 2t − n − 1] (else a server with c holders "
                f"opens two sets per round); got c={self.corrupt_holders}, "
                f"t={self.threshold}, n={self.committee}"
            )
        if not 2 <= self.max_clients < 1 << 15:
            raise ParameterError(f"max_clients must be in [2, 2^15); got {self.max_clients}")
        if not (self.value_bound > 0 and math.isfinite(self.value_bound)):
            raise ParameterError(f"value_bound must be finite and > 0; got {self.value_bound}")
        if not (self.precision > 0 and math.isfinite(self.precision)):
            raise ParameterError(f"precision must be finite and > 0; got {self.precision}")
        if not 0 < self.min_fraction <= 1:
            raise ParameterError(f"min_fraction must be in (0, 1]; got {self.min_fraction}")
        if not 2 <= self.min_clients <= self.max_clients:
            raise ParameterError(
                f"min_clients must be in [2, max_clients = {self.max_clients}]; "
                f"got {self.min_clients}"
            )
        if self.noise_bound > self.precision:
            raise ParameterError(
                f"noise bound must be ≤ precision = {self.precision:.3g}; got "
                f"{self.noise_bound:.3g} (N={self.poly_degree}, Δ=2^{self.scale_bits}, "
                f"K={self.max_clients})"
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
        return self.primes[: len(self.preset.data_prime_bits)]

    @property
    def scale(self) -> float:
        return float(2.0**self.scale_bits)

    def check_cohort(self, cohort_size: int) -> None:
        """Refuse a cohort smaller than the absolute floor (the server chooses the cohort)."""
        if not self.min_clients <= cohort_size <= self.max_clients:
            raise InconsistentViewError(
                f"cohort must have between min_clients = {self.min_clients} and "
                f"max_clients = {self.max_clients} clients; got {cohort_size}"
            )

    def floor(self, cohort_size: int) -> int:
        """The fewest contributors a round over ``cohort_size`` clients may open."""
        return max(self.min_clients, math.ceil(self.min_fraction * cohort_size - 1e-9))

    @property
    def noise_bound(self) -> float:
        """High-probability (1 − 2^-40 per coordinate) bound on the decoded error."""
        variance = coefficient_variance(self.max_clients)
        std = math.sqrt(self.poly_degree * variance / 2) / self.scale
        float_slack = self.max_clients * self.value_bound * self.poly_degree * 2.0**-50
        return _z_score() * std + float_slack

    @property
    def error_bound(self) -> float:
        """Worst-case (w.h.p.) |released − exact sum| per coordinate."""
        return self.noise_bound

    @property
    def data_modulus(self) -> int:
        return math.prod(self.data_primes)

    @property
    def max_sum(self) -> float:
        """Largest |Σ x| per coordinate that decodes without wrapping around q."""
        noise_margin = 13 * math.sqrt(coefficient_variance(self.max_clients))
        return (self.data_modulus // 2 - noise_margin) / (math.sqrt(2) * self.scale)

    @property
    def bytes_per_param(self) -> float:
        """Upload bytes per real: one polynomial (c0) per ciphertext, N reals per ciphertext."""
        return float(sum(residue_width(q) for q in self.data_primes))

    @property
    def key_share_bytes(self) -> int:
        """Bytes of a client's n share envelopes (one key polynomial per prime + AEAD tag each)."""
        per_holder = sum(residue_width(q) for q in self.data_primes) * self.poly_degree + 16
        return self.committee * per_holder

    def describe(self) -> dict[str, object]:
        return {
            "preset": self.preset.name,
            "insecure": self.preset.insecure,
            "poly_degree": self.poly_degree,
            "prime_bits": list(self.preset.prime_bits),
            "total_modulus_bits": self.preset.total_bits,
            "security": "none (test only)" if self.preset.insecure else "128-bit (SEAL table)",
            "scale_bits": self.scale_bits,
            "committee": self.committee,
            "threshold": self.threshold,
            "corrupt_holders": self.corrupt_holders,
            "max_clients": self.max_clients,
            "value_bound": self.value_bound,
            "precision": self.precision,
            "min_fraction": self.min_fraction,
            "min_clients": self.min_clients,
            "noise_bound": self.noise_bound,
            "error_bound": self.error_bound,
            "max_sum": self.max_sum,
            "bytes_per_param": self.bytes_per_param,
            "key_share_bytes_per_client": self.key_share_bytes,
            "packing": "complex (2 reals per slot)",
            "design": "one-shot key-additive (fresh per-round client keys, no smudging)",
        }


def residue_width(prime: int) -> int:
    """Bytes per residue on the wire for ``prime``."""
    return (prime.bit_length() + 7) // 8


def smallest_scale_bits(
    preset: Preset, *, max_clients: int, value_bound: float, precision: float
) -> int:
    """The smallest log2 Δ meeting ``precision`` (leaves the most overflow headroom)."""
    std_coeff = math.sqrt(preset.poly_degree * coefficient_variance(max_clients) / 2)
    float_slack = max_clients * value_bound * preset.poly_degree * 2.0**-50
    target = precision - float_slack
    if target <= 0:
        raise ParameterError(f"precision must exceed float64 resolution; got {precision}")
    return max(1, math.ceil(math.log2(_z_score() * std_coeff / target)))
