"""Flower's SecAgg+ comparator really runs Flower's protocol and sums the same vectors."""

import numpy as np

from secagg.rand import DeterministicRng
from secagg_benchmarks.flower_secaggplus import run_flower_secaggplus


def test_flower_secaggplus_sums_the_vectors_within_its_quantization():
    source = DeterministicRng.from_int(5)
    vectors = [source.fork(str(i)).uniform(40) * 2.0 - 1.0 for i in range(4)]
    row = run_flower_secaggplus(vectors, value_bound=1.0)
    # Flower quantizes stochastically and returns a float32 mean; entries are O(1), so a
    # wrong sum would be off by O(1) while Flower's own rounding stays far below 1e-2
    assert row["max_abs_error"] < 1e-2
    assert row["bytes_up_per_client"] > 40 * 4  # a masked vector went up from every client
    assert row["clients"] == 4 and row["dim"] == 40
    assert not np.isnan(row["seconds_total"])
