"""The only module that imports TenSEAL: SEAL contexts, keys, encryption, decoding.

Raw data moves between SEAL objects and numpy through zero-copy views of the
C++ buffers (the sealapi bindings expose no buffer protocol, and the
serialization path goes through files, which must never hold a key share).
The views rely on the SEAL 4.x object layout shipped in tenseal 0.3.18, so every
access validates the layout against the object's own getters (parms_id, sizes,
scale, and sampled coefficients through ``obj[i]``) and refuses with
:class:`BackendError` if anything differs. Views never outlive a call.

What SEAL samples, and from where:

* a client's per-round secret kᵢ: uniform mod each data prime, drawn in the NTT
  domain from the caller's ``rng``;
* a client's RLWE error eᵢⱼ: SEAL's ``encrypt_symmetric`` draws it (and a c1 that
  is then replaced by the public CRS polynomial) from its own Blake2xb PRNG,
  freshly seeded per encryption from the operating system (``std::random_device``).
  Seeding it from our rng would need one SEAL context per ciphertext (5 ms each)
  — and a context with a fixed seed would reuse one error for every ciphertext —
  so client ciphertexts are not reproducible under a DeterministicRng.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np
import tenseal.sealapi as seal

from secagg.ckks.params import Preset
from secagg.errors import ParameterError, SecAggError
from secagg.rand import Csprng

_PYBIND_VALUE_OFFSET = 16  # PyObject_HEAD, then pybind11's simple_value_holder[0]
# SEAL 4.x layouts (byte offsets of the fields we check, then of the data pointer)
_PT_COEFF_COUNT, _PT_SCALE, _PT_CAPACITY, _PT_SIZE, _PT_DATA = 32, 40, 64, 72, 80
_CT_NTT, _CT_SIZE, _CT_DEGREE, _CT_PRIMES, _CT_SCALE = 32, 40, 48, 56, 64
_CT_CAPACITY, _CT_DYN_SIZE, _CT_DATA = 96, 104, 112
_SAMPLES = 5


class BackendError(SecAggError):
    """The SEAL binding does not have the object layout this module was validated on."""


def _address(obj: object) -> int:
    value = ctypes.c_void_p.from_address(id(obj) + _PYBIND_VALUE_OFFSET).value
    if not value:
        raise BackendError("SEAL object pointer must be non-null")
    return int(value)


def _u64(addr: int) -> int:
    return int(ctypes.c_uint64.from_address(addr).value)


def _f64(addr: int) -> float:
    return float(ctypes.c_double.from_address(addr).value)


def _check_parms(base: int, parms_id: Sequence[int]) -> None:
    if [_u64(base + 8 * i) for i in range(4)] != [int(x) for x in parms_id]:
        raise BackendError("SEAL layout check failed (parms_id)")


def _view(ptr: int, count: int, obj: object, shape: tuple[int, ...]) -> np.ndarray:
    if not ptr or count == 0:
        raise BackendError("SEAL data pointer must be set")
    arr = np.ctypeslib.as_array((ctypes.c_uint64 * count).from_address(ptr))
    step = max(1, count // _SAMPLES)
    for i in list(range(0, count, step))[:_SAMPLES] + [count - 1]:
        if int(arr[i]) != int(obj[i]):  # type: ignore[index]
            raise BackendError("SEAL layout check failed (coefficient sample)")
    return arr.reshape(shape)


def plaintext_view(pt: seal.Plaintext) -> np.ndarray:
    """A validated uint64 view of a Plaintext's coefficients (valid while ``pt`` lives)."""
    base = _address(pt)
    _check_parms(base, pt.parms_id())
    count = int(pt.coeff_count())
    if (
        _u64(base + _PT_COEFF_COUNT) != count
        or _u64(base + _PT_SIZE) != count
        or _u64(base + _PT_CAPACITY) < count
        or _f64(base + _PT_SCALE) != float(pt.scale)
    ):
        raise BackendError("SEAL layout check failed (plaintext header)")
    return _view(_u64(base + _PT_DATA), count, pt, (count,))


def ciphertext_view(ct: seal.Ciphertext) -> np.ndarray:
    """A validated uint64 view ``(size, k, N)`` of a Ciphertext (valid while ``ct`` lives)."""
    base = _address(ct)
    _check_parms(base, ct.parms_id())
    size, degree, primes = (
        int(ct.size()),
        int(ct.poly_modulus_degree()),
        int(ct.coeff_modulus_size()),
    )
    count = size * degree * primes
    if (
        ctypes.c_uint8.from_address(base + _CT_NTT).value != int(ct.is_ntt_form())
        or _u64(base + _CT_SIZE) != size
        or _u64(base + _CT_DEGREE) != degree
        or _u64(base + _CT_PRIMES) != primes
        or _f64(base + _CT_SCALE) != float(ct.scale)
        or _u64(base + _CT_DYN_SIZE) != count
        or _u64(base + _CT_CAPACITY) < count
    ):
        raise BackendError("SEAL layout check failed (ciphertext header)")
    return _view(_u64(base + _CT_DATA), count, ct, (size, primes, degree))


def rns_primes(preset: Preset) -> tuple[int, ...]:
    """The primes SEAL's CoeffModulus.Create picks for the preset (deterministic)."""
    try:
        moduli = seal.CoeffModulus.Create(preset.poly_degree, list(preset.prime_bits))
    except (ValueError, RuntimeError) as exc:
        raise ParameterError(
            f"prime_bits must admit NTT primes at N={preset.poly_degree}; got {preset.prime_bits}"
        ) from exc
    return tuple(int(m.value()) for m in moduli)


def _seeded_factory(rng: Csprng) -> seal.Blake2xbPRNGFactory:
    words = np.frombuffer(rng.random_bytes(64), dtype="<u8")
    return seal.Blake2xbPRNGFactory([int(w) for w in words])


class SealContext:
    """SEAL objects for one parameter set: context, encoder, evaluator, level ids."""

    def __init__(self, preset: Preset, primes: tuple[int, ...]) -> None:
        self.preset = preset
        self.primes = primes
        self.degree = preset.poly_degree
        self.k = len(preset.data_prime_bits)
        self.context = self._make_context(None)
        self.encoder = seal.CKKSEncoder(self.context)
        self.evaluator = seal.Evaluator(self.context)
        self.data_parms = list(self.context.first_parms_id())
        self.key_parms = list(self.context.key_parms_id())

    def _make_context(self, rng: Csprng | None) -> seal.SEALContext:
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(self.degree)
        parms.set_coeff_modulus(seal.CoeffModulus.Create(self.degree, list(self.preset.prime_bits)))
        if rng is not None:
            parms.set_random_generator(_seeded_factory(rng))
        level = seal.SEC_LEVEL_TYPE.NONE if self.preset.insecure else seal.SEC_LEVEL_TYPE.TC128
        ctx = seal.SEALContext(parms, True, level)
        if not ctx.parameters_set():
            raise ParameterError(
                f"SEAL must accept the parameters; got {ctx.parameters_error_message()}"
            )
        if tuple(int(m.value()) for m in parms.coeff_modulus()) != self.primes:
            raise ParameterError("SEAL's primes must match the declared primes")
        return ctx

    # -- keys -------------------------------------------------------------------------

    def fresh_secret(self, *, rng: Csprng) -> tuple[seal.SecretKey, np.ndarray]:
        """A fresh secret uniform mod Q: the SEAL key and its data-level NTT rows ``(k, N)``.

        Uniform, not ternary: K_S = Σ kᵢ is then uniform given any other keys, so an
        opened K_S says nothing about one honest client's key (a ternary sum of few
        keys pins the coefficients where |K_S| = h). RLWE with a uniform secret is the
        standard form (at least as hard as with a small one); no operation here
        multiplies by the key twice, so its size does not touch the noise. Rows
        are sampled directly in the NTT domain (a bijection per prime) and
        independently per prime (CRT: uniform mod each qⱼ ⇔ uniform mod Q).

        Security: both outputs are secret; the caller keeps them for one round only.
        """
        rows = np.stack([rng.integers_below(q, self.degree) for q in self.primes[: self.k]])
        return self.secret_key(rows), rows

    def secret_key(self, rows: np.ndarray) -> seal.SecretKey:
        """A SEAL SecretKey whose data-level rows are ``rows`` (any special-prime row zero).

        Security: the result holds secret material.
        """
        sk = seal.KeyGenerator(self.context).secret_key()  # storage; overwritten below
        view = plaintext_view(sk.data()).reshape(-1, self.degree)
        view[: self.k] = rows
        view[self.k :] = 0
        return sk

    # -- encryption -------------------------------------------------------------------

    def encrypt_c0(
        self, secret_key: seal.SecretKey, values: np.ndarray, scale: float, crs: np.ndarray
    ) -> np.ndarray:
        """c0ⱼ = −aⱼ·k − eⱼ + Encode_Δ(mⱼ) for reals (length count·N) → ``(k, count, N)``.

        SEAL's ``encrypt_symmetric`` gives (−a'·k − e + Δm, a') with its own random a';
        decrypting (that c0, a' − aⱼ) under k adds (a' − aⱼ)·k inside SEAL, which
        turns it into the ciphertext for the public ``crs`` polynomial aⱼ.

        Security: uses the client's secret; the output alone is an RLWE sample.
        """
        n = self.degree
        count = values.size // n
        slots = values.reshape(count, n // 2, 2)
        out = np.empty((self.k, count, n), dtype=np.uint64)
        encryptor = seal.Encryptor(self.context, secret_key)
        decryptor = seal.Decryptor(self.context, secret_key)
        pt, ct, shifted = seal.Plaintext(), seal.Ciphertext(), seal.Plaintext()
        primes = np.asarray(self.primes[: self.k], dtype=np.uint64)[:, None]
        for i in range(count):
            z = (slots[i, :, 0] + 1j * slots[i, :, 1]).tolist()
            self.encoder.encode(z, self.data_parms, scale, pt)
            encryptor.encrypt_symmetric(pt, ct)
            view = ciphertext_view(ct)
            view[1] = (view[1] + (primes - crs[:, i])) % primes
            decryptor.decrypt(ct, shifted)
            out[:, i] = plaintext_view(shifted).reshape(self.k, n)
        return out

    # -- decryption -------------------------------------------------------------------

    def decrypt_with(
        self, secret_rows: np.ndarray, c0: np.ndarray, crs: np.ndarray, scale: float
    ) -> np.ndarray:
        """Decrypt ``(c0ⱼ, aⱼ)`` (each ``(k, count, N)``) under ``secret_rows`` → reals.

        Security: needs the round's opened key K_S; SEAL computes c0 + a·K and decodes.
        """
        decryptor = seal.Decryptor(self.context, self.secret_key(secret_rows))
        work = _work_ciphertext(self, scale)
        view = ciphertext_view(work)
        pt = seal.Plaintext()
        n = self.degree
        count = c0.shape[1]
        out = np.empty((count, n // 2), dtype=np.complex128)  # (real, imag) = 2 values a slot
        for i in range(count):
            view[0] = c0[:, i]
            view[1] = crs[:, i]
            decryptor.decrypt(work, pt)
            out[i] = self.encoder.decode_complex(pt)  # one conversion, straight into place
        view[:] = 0
        return out.view(np.float64).reshape(-1)


def _work_ciphertext(ctx: SealContext, scale: float) -> seal.Ciphertext:
    """A data-level, NTT-form, size-2 ciphertext at ``scale`` to overwrite (public content)."""
    keygen = seal.KeyGenerator(ctx.context)
    encryptor = seal.Encryptor(ctx.context, keygen.secret_key())
    pt, ct = seal.Plaintext(), seal.Ciphertext()
    ctx.encoder.encode(0.0, ctx.data_parms, scale, pt)
    encryptor.encrypt_symmetric(pt, ct)
    return ct
