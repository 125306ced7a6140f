"""The in-process transport: real codec on every hop, dropout windows, accounting."""

import numpy as np
import pytest

from secagg.errors import ParameterError
from secagg.plain import ClientPhase, PlainServer, PlainUpdate, ServerPhase
from secagg.protocol import client_id
from secagg.rand import DeterministicRng
from secagg.schemes import AggregationConfig, create_scheme
from secagg.wire import encode
from secagg_training.transport import InProcessTransport


def _round(n=3, dim=4):
    scheme = create_scheme("plain", AggregationConfig(max_clients=n))
    cohort = [client_id(i) for i in range(n)]
    return scheme.open_round(7, cohort, dim, rng=DeterministicRng.from_int(1)), cohort


def test_bytes_are_the_encoded_frames():
    rs, cohort = _round()
    inputs = {p: np.full(4, i, dtype=np.float64) for i, p in enumerate(cohort)}
    report = InProcessTransport().run(rs, inputs=inputs)
    frame = encode(PlainUpdate(session=b"x" * 16, round=7, sender=cohort[0], recipient="server",
                               vector=np.zeros(4)))
    assert report.bytes_sent[cohort[0]] == len(frame)
    assert report.bytes_received["server"] == 3 * len(frame)
    assert report.messages == 3 and report.phases == 1
    assert report.windows[0].name == ServerPhase.COLLECT.name
    assert report.windows[0].bytes_sent["client"] == 3 * len(frame)
    np.testing.assert_array_equal(rs.coordinator.finalize().vector, np.full(4, 3.0))


def test_dropout_from_phase_zero_never_sends():
    rs, cohort = _round()
    report = InProcessTransport().run(rs, inputs={p: np.ones(4) for p in cohort},
                                      dropouts={cohort[2]: 0})
    assert cohort[2] not in report.bytes_sent
    assert report.silenced == (cohort[2],)
    assert rs.clients[cohort[2]].phase is ClientPhase.READY
    assert rs.coordinator.finalize().dropped == (cohort[2],)


def test_dropout_after_sending_keeps_the_message():
    rs, cohort = _round()
    InProcessTransport().run(rs, inputs={p: np.ones(4) for p in cohort}, dropouts={cohort[0]: 1})
    assert rs.coordinator.finalize().contributors == tuple(cohort)


def test_oversized_frames_rejected_by_the_receiver():
    from secagg.errors import DecodeError

    rs, cohort = _round(dim=1000)
    with pytest.raises(DecodeError):
        InProcessTransport(max_message_bytes=100).run(rs, inputs={cohort[0]: np.ones(1000)})


def test_inputs_for_strangers_refused():
    rs, _ = _round()
    with pytest.raises(ParameterError):
        InProcessTransport().run(rs, inputs={"client/99": np.ones(4)})


def test_phase_matrix_of_the_reference_roles():
    """Every message type in every phase: accepted or UnexpectedPhaseError."""
    from secagg.errors import UnexpectedPhaseError

    rs, cohort = _round()
    server = rs.coordinator
    assert isinstance(server, PlainServer)
    msg = rs.clients[cohort[0]].protect(np.ones(4))[0]
    for phase in ServerPhase:
        server.phase = phase
        if PlainUpdate in server.TRANSITIONS[phase]:
            server.handle(msg)
        else:
            with pytest.raises(UnexpectedPhaseError):
                server.handle(msg)
    client = rs.clients[cohort[1]]
    for phase in ClientPhase:
        client.phase = phase
        with pytest.raises(UnexpectedPhaseError):
            client.handle(msg)


def test_windows_are_named_by_the_phase_they_carry():
    """Window k is labelled with the coordinator's phase during it (not the one it closed)."""
    scheme = create_scheme("masking", AggregationConfig(max_clients=4))
    cohort = [client_id(i) for i in range(4)]
    rs = scheme.open_round(1, cohort, 8, rng=DeterministicRng.from_int(1))
    report = InProcessTransport().run(rs, inputs={p: np.zeros(8) for p in cohort})
    names = [w.name for w in report.windows]
    assert names == ["ADVERTISE", "SHARE", "MASKED_INPUT", "CONSISTENCY", "UNMASK", "DONE"]
    assert set(report.windows[0].bytes_sent) == {"client"}  # only key adverts go out first
