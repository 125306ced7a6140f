"""BENCHMARK-ONLY comparator: Flower's own SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``).

Flower ships SecAgg+ (Bell et al. 2020) as a server workflow plus a client mod. This
runs it, unmodified, on the same vectors our schemes sum: the real ``ClientApp`` with
``secaggplus_mod`` answers the real workflow's four stages through Flower's ``Grid``
interface served in this process (no SuperLink, so the comparison is protocol work,
not Flower's process overhead — which :mod:`secagg_benchmarks.flower_overhead` measures).
Bytes are Flower's protobuf encoding of each message's content, the analogue of our
encoded frames.

Not one of the engine's schemes: it is a measurement of someone else's protocol
(its threat model and parameters are Flower's: clipping range, 2^22 quantization,
2^32 modulus).
"""

from __future__ import annotations

import collections
import copy
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common.serde import recorddict_to_proto
from flwr.server import LegacyContext, ServerConfig
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 1


class _VectorClient(NumPyClient):
    """A client whose 'trained model' is a fixed vector (the benchmark's input)."""

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector

    def fit(self, parameters: Any, config: Any) -> tuple[list[np.ndarray], int, dict]:
        return [self.vector], 1, {}


class _InProcessGrid:
    """Flower's Grid interface delivering to a ClientApp here; tallies content bytes."""

    def __init__(self, app: ClientApp, vectors: list[np.ndarray]) -> None:
        self.app = app
        self.nodes = {1000 + i: RecordDict() for i in range(len(vectors))}
        self.up: dict[int, int] = collections.defaultdict(int)
        self.down: dict[int, int] = collections.defaultdict(int)
        self.client_seconds = 0.0

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        replies = []
        for sent in messages:
            message = copy.deepcopy(sent)  # each node gets its own copy, as over the network
            node = message.metadata.dst_node_id
            self.down[node] += recorddict_to_proto(message.content).ByteSize()
            context = Context(RUN_ID, node, {}, self.nodes[node], {})
            start = time.perf_counter()
            try:
                reply = self.app(message, context)
            except Exception as exc:  # noqa: BLE001 - a SuperNode turns it into an error reply
                reply = Message(Error(code=0, reason=str(exc)), reply_to=message)
            self.client_seconds += time.perf_counter() - start
            if reply.has_content():
                self.up[node] += recorddict_to_proto(reply.content).ByteSize()
            replies.append(reply)
        return replies


def run_flower_secaggplus(
    vectors: list[np.ndarray], *, value_bound: float, threshold: float = 0.5
) -> dict[str, Any]:
    """One SecAgg+ round of Flower's implementation over ``vectors``; cost and error."""
    n, dim = len(vectors), int(vectors[0].shape[0])
    for name, value in (("_run_id", RUN_ID), ("_node_id", 0), ("_task_id", 1)):
        setattr(TaskIdentity, name, value)  # stamps messages as a ServerApp process would
    vectors = [np.asarray(v, dtype=np.float32) for v in vectors]
    by_node = {1000 + i: v for i, v in enumerate(vectors)}

    def client_fn(context: Context) -> Any:
        return _VectorClient(by_node[context.node_id]).to_client()

    grid = _InProcessGrid(ClientApp(client_fn=client_fn, mods=[secaggplus_mod]), vectors)
    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n
    )
    context = LegacyContext(
        context=Context(RUN_ID, 0, {}, RecordDict(), {}),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
    )
    for node in grid.get_node_ids():
        context.client_manager.register(GridClientProxy(node, grid, RUN_ID))  # type: ignore[arg-type]
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord([np.zeros(dim, np.float32)])
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: 1}
    )
    workflow = SecAggPlusWorkflow(
        num_shares=1.0, reconstruction_threshold=threshold, clipping_range=float(value_bound)
    )
    start = time.perf_counter()
    workflow(grid, context)  # type: ignore[arg-type]
    total = time.perf_counter() - start
    mean = context.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()[0]
    exact = np.sum(np.asarray(vectors, dtype=np.float64), axis=0)
    return {
        "scheme": "flower-secagg+",
        "clients": n,
        "dim": dim,
        "seconds_total": total,
        "seconds_server": total - grid.client_seconds,
        "seconds_client_mean": grid.client_seconds / n,
        "bytes_up_per_client": float(np.mean(list(grid.up.values()))),
        "bytes_down_per_client": float(np.mean(list(grid.down.values()))),
        "max_abs_error": float(np.max(np.abs(mean.astype(np.float64) * n - exact))),
    }


def _ours(scheme: str, vectors: list[np.ndarray], value_bound: float) -> dict[str, Any]:
    """One round of one of our schemes over the same vectors, in process (for comparison)."""
    from secagg.protocol import client_id
    from secagg.rand import DeterministicRng
    from secagg.schemes import AggregationConfig, create_scheme
    from secagg_training.transport import InProcessTransport

    n, dim = len(vectors), int(vectors[0].shape[0])
    config = AggregationConfig(max_clients=n, value_bound=value_bound)
    rng = DeterministicRng.from_int(0, "bench/flower-secagg+")
    protocol = create_scheme(scheme, config)
    setup = protocol.setup(rng=rng.fork("setup"))
    if setup is not None:
        InProcessTransport().run(setup)
    cohort = [client_id(i) for i in range(n)]
    start = time.perf_counter()
    session = protocol.open_round(1, cohort, dim, rng=rng.fork("round"))
    report = InProcessTransport().run(session, inputs=dict(zip(cohort, vectors, strict=True)))
    aggregate = session.coordinator.finalize()
    total = time.perf_counter() - start
    exact = np.sum(np.asarray(vectors, dtype=np.float64), axis=0)
    return {
        "scheme": scheme,
        "clients": n,
        "dim": dim,
        "seconds_total": total,
        "seconds_server": report.seconds_by_kind().get("server", 0.0),
        "seconds_client_mean": report.seconds_by_kind().get("client", 0.0) / n,
        "bytes_up_per_client": report.mean_bytes("client", sent=True),
        "bytes_down_per_client": report.mean_bytes("client", sent=False),
        "max_abs_error": float(np.max(np.abs(aggregate.vector - exact))),
    }


def compare(
    sizes: tuple[tuple[int, int], ...] = ((5, 1000), (10, 10000)), *, seed: int = 0
) -> list[dict[str, Any]]:
    """Flower's SecAgg+ beside our masking and the plaintext sum, same vectors per size."""
    from secagg.rand import DeterministicRng

    rows = []
    for n, dim in sizes:
        source = DeterministicRng.from_int(seed, f"bench/flower-secagg+/{n}/{dim}")
        vectors = [source.fork(str(i)).uniform(dim) * 2.0 - 1.0 for i in range(n)]
        rows.append(run_flower_secaggplus(vectors, value_bound=1.0))
        for scheme in ("masking", "plain"):
            rows.append(_ours(scheme, vectors, 1.0))
    return rows
