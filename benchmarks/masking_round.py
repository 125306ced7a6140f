"""Measure pairwise masking against its performance goals (a benchmark, never a test).

Run ``python -m secagg_benchmarks.masking_round [--dim 1000000] [--clients 100]``. Every
ratio is measured side by side in one process: a full masking round through the
in-process transport versus a plain float32 sum of the same number of vectors,
and one mask expansion versus the raw AES-256-CTR keystream of the same length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.masking.prg import apply_masks
from secagg.masking.scheme import PairwiseMasking
from secagg.protocol import client_id
from secagg.rand import DeterministicRng


def _median_seconds(step: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mask_cost(dim: int, peers: int = 16, repeat: int = 7) -> dict[str, float]:
    """Seconds per peer mask of ``dim`` uint32 words vs the raw keystream of 4·dim bytes."""
    keys = [bytes([i + 1]) * 32 for i in range(peers)]
    target = np.zeros(dim, dtype=np.uint32)
    zeros = bytes(4 * dim)
    into = np.empty(4 * dim, dtype=np.uint8)

    def raw_update() -> None:
        for key in keys:
            Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(zeros)

    def raw_update_into() -> None:
        for key in keys:
            enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
            enc.update_into(zeros, memoryview(into.data))

    def masks() -> None:
        apply_masks(target, add=keys[: peers // 2], subtract=keys[peers // 2 :])

    per = {
        "keystream_update_s": _median_seconds(raw_update, repeat) / peers,
        "keystream_update_into_s": _median_seconds(raw_update_into, repeat) / peers,
        "mask_apply_s": _median_seconds(masks, repeat) / peers,
    }
    per["ratio_vs_update"] = per["mask_apply_s"] / per["keystream_update_s"]
    per["ratio_vs_update_into"] = per["mask_apply_s"] / per["keystream_update_into_s"]
    return per


def plain_sum_seconds(dim: int, clients: int, repeat: int = 3) -> float:
    """A plain float32 FedAvg-style sum of ``clients`` distinct vectors of ``dim``."""
    updates = [np.full(dim, i, dtype=np.float32) for i in range(clients)]

    def total() -> None:
        acc = np.zeros(dim, dtype=np.float32)
        for u in updates:
            np.add(acc, u, out=acc)

    return _median_seconds(total, repeat)


def masking_round(dim: int, clients: int, dropout: float, graph: str) -> dict[str, Any]:
    """One full round through the in-process transport; server seconds by phase window."""
    from secagg_training.transport import InProcessTransport

    scheme = PairwiseMasking(max_clients=clients, graph=graph)
    cohort = [client_id(i) for i in range(clients)]
    session = scheme.open_round(0, cohort, dim, rng=DeterministicRng.from_int(7))
    rng = DeterministicRng.from_int(8)
    inputs = {p: (rng.uniform(dim) * 2 - 1).astype(np.float32) for p in cohort}
    dropped = int(round(dropout * clients))
    # drop after sharing keys, before the masked input: the costly case for the server
    dropouts = {cohort[i]: 2 for i in range(0, clients, max(1, clients // max(dropped, 1)))}
    dropouts = dict(list(dropouts.items())[:dropped])
    report = InProcessTransport().run(session, inputs=inputs, dropouts=dropouts)
    agg = session.coordinator.finalize()
    exact = np.sum([inputs[p].astype(np.float64) for p in agg.contributors], axis=0)
    # transport window i opens before the i-th advance, named after the phase it closes
    server_s = [w.seconds.get("server", 0.0) for w in report.windows]
    windows = {
        f"w{i}:{w.name}": s for i, (w, s) in enumerate(zip(report.windows, server_s, strict=True))
    }
    # vector work: window 2 sums the masked inputs as they arrive, window 5 unmasks
    vector_work = server_s[2] + server_s[5]
    return {
        "graph": graph,
        "degree": session.coordinator.params.graph.degree,  # type: ignore[attr-defined]
        "dropout": dropout,
        "dropped": len(agg.dropped),
        "server_total_s": report.seconds["server"],
        "server_vector_s": vector_work,
        "server_by_window_s": windows,
        "client_mean_s": float(np.mean([report.seconds[p] for p in cohort])),
        "upload_bytes_per_param": float(
            np.mean([report.bytes_sent[p] for p in agg.contributors]) / dim
        ),
        "max_abs_error": float(np.max(np.abs(agg.vector - exact))),
        "error_bound": agg.error_bound,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--graphs", default="sparse,full")
    parser.add_argument("--dropouts", default="0,0.1")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per setting (medians)")
    args = parser.parse_args()
    results: dict[str, object] = {"mask_cost": mask_cost(args.dim)}
    rounds: list[dict[str, Any]] = []
    for graph in args.graphs.split(","):
        for dropout in (float(d) for d in args.dropouts.split(",")):
            plains, runs = [], []
            for _ in range(args.repeat):  # interleaved so both see the same machine load
                plains.append(plain_sum_seconds(args.dim, args.clients))
                runs.append(masking_round(args.dim, args.clients, dropout, graph))
            row = min(runs, key=lambda r: r["server_vector_s"])
            for key in ("server_total_s", "server_vector_s", "client_mean_s"):
                row[key] = statistics.median(r[key] for r in runs)
            plain = statistics.median(plains)
            row["plain_sum_s"] = plain
            row["server_total_ratio"] = row["server_total_s"] / plain
            row["server_vector_ratio"] = row["server_vector_s"] / plain
            rounds.append(row)
            print(json.dumps(row), flush=True)
    results["rounds"] = rounds
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
