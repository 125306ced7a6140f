"""Generate tests/vectors/masking_vectors.json: known answers for the masking scheme.

Run from the repository root: ``.venv/bin/python tests/vectors/make_masking_vectors.py``.
Every input comes from ``DeterministicRng.from_int(2026, label=...)``, so the file is
reproducible; it records the library versions that produced it.
"""

from __future__ import annotations

import json
import pathlib
import platform

import cryptography
import numpy as np
from cryptography.hazmat.backends.openssl.backend import backend

from secagg.masking.encoding import FixedPointEncoding
from secagg.masking.prg import apply_masks, expand
from secagg.masking.sharing import secrets_to_field, share_secrets
from secagg.rand import DeterministicRng

OUT = pathlib.Path(__file__).with_name("masking_vectors.json")
SEED = 2026


def prg_vectors() -> dict[str, object]:
    rng = DeterministicRng.from_int(SEED, label="masking/prg")
    key_a, key_b = rng.random_bytes(32), rng.random_bytes(32)
    target = np.arange(20, dtype=np.uint32) * np.uint32(0x01010101)
    masked = target.copy()
    apply_masks(masked, add=[key_a], subtract=[key_b])
    return {
        "cipher": "AES-256-CTR, zero initial counter block, little-endian words",
        "key_a": key_a.hex(),
        "key_b": key_b.hex(),
        "expand_a_uint32_16": expand(key_a, 16, np.uint32).tolist(),
        "expand_a_uint16_8": expand(key_a, 8, np.uint16).tolist(),
        "expand_a_uint64_4": [str(v) for v in expand(key_a, 4, np.uint64).tolist()],
        "target_uint32": target.tolist(),
        "target_plus_a_minus_b": masked.tolist(),
    }


def shamir_vectors() -> dict[str, object]:
    rng = DeterministicRng.from_int(SEED, label="masking/shamir")
    seed, key = rng.random_bytes(32), rng.random_bytes(32)
    secrets = secrets_to_field(seed, key)
    xs = [1, 2, 3, 4, 5]
    shares = share_secrets(
        secrets, threshold=3, xs=xs, rng=DeterministicRng.from_int(SEED, label="masking/coeffs")
    )
    return {
        "prime": 2**31 - 1,
        "threshold": 3,
        "xs": xs,
        "seed": seed.hex(),
        "key": key.hex(),
        "secrets_field": secrets.tolist(),
        "coefficient_rng": "DeterministicRng.from_int(2026, label='masking/coeffs')",
        "shares": shares.tolist(),
    }


def encoding_vectors() -> dict[str, object]:
    enc = FixedPointEncoding.largest(32, value_bound=1.0, max_clients=100)
    values = [0.0, 1.0, -1.0, 0.5, -0.25, 1e-7, 3.0]
    units = enc.encode(np.array(values), rng=DeterministicRng.from_int(SEED, label="masking/enc"))
    return {"width": 32, "max_units": enc.max_units, "values": values, "encoded": units.tolist()}


def main() -> None:
    data = {
        "generator": "tests/vectors/make_masking_vectors.py",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cryptography": cryptography.__version__,
            "openssl": backend.openssl_version_text(),
        },
        "prg": prg_vectors(),
        "shamir": shamir_vectors(),
        "encoding": encoding_vectors(),
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
