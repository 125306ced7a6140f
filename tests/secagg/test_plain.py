import numpy as np
import pytest

from secagg.errors import InconsistentViewError, InsufficientParticipantsError, UnexpectedPhaseError
from secagg.plain import PlainUpdate
from secagg.protocol import SERVER, client_id
from secagg.rand import DeterministicRng
from secagg.schemes import AggregationConfig, create_scheme
from training.transport import InProcessTransport


def _round(n=4, dim=6):
    scheme = create_scheme("plain", AggregationConfig(max_clients=n))
    cohort = [client_id(i) for i in range(n)]
    rs = scheme.open_round(0, cohort, dim, rng=DeterministicRng.from_int(0))
    return rs, cohort


def test_sum_of_survivors_only():
    rs, cohort = _round()
    rng = DeterministicRng.from_int(1)
    inputs = {p: rng.standard_normal(6) for p in cohort}
    report = InProcessTransport().run(rs, inputs=inputs, dropouts={cohort[1]: 0})
    agg = rs.coordinator.finalize()
    expected = sum(inputs[p] for p in cohort if p != cohort[1])
    np.testing.assert_allclose(agg.vector, expected)
    assert agg.dropped == (cohort[1],)
    assert report.bytes_sent[cohort[0]] > 6 * 8


def test_duplicate_submission_refused():
    rs, cohort = _round()
    msg = rs.clients[cohort[0]].protect(np.ones(6))[0]
    rs.coordinator.handle(msg)
    with pytest.raises(InconsistentViewError):
        rs.coordinator.handle(msg)


def test_out_of_cohort_sender_refused():
    rs, cohort = _round()
    msg = rs.clients[cohort[0]].protect(np.ones(6))[0]
    forged = PlainUpdate(
        session=msg.session, round=0, sender="client/99", recipient=SERVER, vector=msg.vector
    )
    with pytest.raises(InconsistentViewError):
        rs.coordinator.handle(forged)


def test_nobody_left_aborts():
    rs, cohort = _round()
    with pytest.raises(InsufficientParticipantsError):
        InProcessTransport().run(
            rs, inputs={p: np.zeros(6) for p in cohort}, dropouts={p: 0 for p in cohort}
        )


def test_phase_errors():
    rs, cohort = _round()
    msg = rs.clients[cohort[0]].protect(np.ones(6))[0]
    with pytest.raises(UnexpectedPhaseError):
        rs.clients[cohort[0]].protect(np.ones(6))
    rs.coordinator.handle(msg)
    rs.coordinator.advance()
    with pytest.raises(UnexpectedPhaseError):
        rs.coordinator.handle(msg)
    with pytest.raises(UnexpectedPhaseError):
        rs.coordinator.advance()
