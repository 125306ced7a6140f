import dataclasses

import numpy as np
import pytest

from secagg.errors import (
    DecodeError,
    InconsistentViewError,
    InsufficientParticipantsError,
    UnexpectedPhaseError,
)
from secagg.plain import PlainClient, PlainUpdate
from secagg.protocol import SERVER, client_id
from secagg.rand import DeterministicRng
from secagg.schemes import AggregationConfig, create_scheme
from secagg_training.transport import InProcessTransport


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


class _PoisoningClient(PlainClient):
    """A deviating client: skips the honest client's finiteness check and sends its
    vector as is; the transport still carries it through the real wire codec."""

    def __init__(self, honest: PlainClient, vector: np.ndarray) -> None:
        super().__init__(honest.party, honest._session, honest._round, honest._dim)
        self._evil = vector

    def protect(self, vector):
        msg = super().protect(np.zeros_like(vector))[0]
        return [dataclasses.replace(msg, vector=self._evil)]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e308])
def test_server_refuses_a_non_finite_or_overflowing_update(bad):
    """Threat: one client makes the released "sum" NaN/inf (the honest client refuses such
    input; a deviating one sends it anyway). The server refuses it with a named error and
    releases nothing for the round."""
    rs, cohort = _round()
    evil = np.zeros(6)
    evil[3] = bad
    rs.clients[cohort[2]] = _PoisoningClient(rs.clients[cohort[2]], evil)
    with pytest.raises(DecodeError, match=f"update of {cohort[2]} must"):
        InProcessTransport().run(rs, inputs={p: np.ones(6) for p in cohort})
    with pytest.raises(UnexpectedPhaseError):
        rs.coordinator.finalize()


def test_largest_accepted_entries_still_sum_to_a_finite_value():
    rs, cohort = _round()
    limit = float(np.finfo(np.float64).max) / (2 * len(cohort))
    InProcessTransport().run(rs, inputs={p: np.full(6, limit) for p in cohort})
    assert np.all(np.isfinite(rs.coordinator.finalize().vector))
