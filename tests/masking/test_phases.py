"""The exhaustive phase-transition matrix: every message type in every phase of each role."""

import pytest
from masking_driver import drive, full_transcript, make_round

from secagg.errors import InsufficientParticipantsError, UnexpectedPhaseError
from secagg.masking import ClientPhase, ServerPhase
from secagg.masking.messages import (
    ALL_MESSAGES,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    KeyRoster,
    MaskedInput,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
)

TRANSCRIPT = full_transcript().transcript
SAMPLE = {t: TRANSCRIPT[t][0] for t in ALL_MESSAGES}

SERVER_WINDOWS = [
    (ServerPhase.ADVERTISE, AdvertiseKeys),
    (ServerPhase.SHARE, EncryptedShares),
    (ServerPhase.MASKED_INPUT, MaskedInput),
    (ServerPhase.CONSISTENCY, ConsistencySignature),
    (ServerPhase.UNMASK, UnmaskResponse),
]
CLIENT_WINDOWS = [
    (ClientPhase.ADVERTISED, KeyRoster),
    (ClientPhase.SHARED, ShareBundle),
    (ClientPhase.MASKED, ConsistencyRequest),
    (ClientPhase.SIGNED, UnmaskRequest),
]


def _refuses_all_but(role, accepted):
    phase = role.phase
    for msg_type in ALL_MESSAGES:
        if msg_type is accepted:
            continue
        with pytest.raises(UnexpectedPhaseError):
            role.handle(SAMPLE[msg_type])
        assert role.phase is phase  # refusal changes nothing


def test_every_message_type_has_a_sample():
    assert all(TRANSCRIPT[t] for t in ALL_MESSAGES)


@pytest.mark.parametrize("window", range(len(SERVER_WINDOWS)))
def test_server_matrix(window):
    phase, accepted = SERVER_WINDOWS[window]
    d = drive(window, hold_from="client/3")
    server = d.session.coordinator
    assert server.phase is phase
    _refuses_all_but(server, accepted)
    [held] = [m for m in d.held if m.recipient == "server"]
    assert isinstance(held, accepted)
    assert server.handle(held) == []
    assert server.phase is phase


def test_server_done_and_aborted_accept_nothing():
    done = full_transcript().session.coordinator
    assert done.phase is ServerPhase.DONE
    _refuses_all_but(done, None)
    with pytest.raises(UnexpectedPhaseError):
        done.advance()
    rs, _ = make_round()
    with pytest.raises(InsufficientParticipantsError):
        rs.coordinator.advance()  # nobody advertised
    assert rs.coordinator.phase is ServerPhase.ABORTED and rs.coordinator.done
    _refuses_all_but(rs.coordinator, None)
    with pytest.raises(UnexpectedPhaseError):
        rs.coordinator.advance()


@pytest.mark.parametrize("window", range(1, 1 + len(CLIENT_WINDOWS)))
def test_client_matrix(window):
    phase, accepted = CLIENT_WINDOWS[window - 1]
    d = drive(window, hold_to="client/0")
    client = d.session.clients["client/0"]
    assert client.phase is phase
    _refuses_all_but(client, accepted)
    [held] = [m for m in d.held if m.recipient == "client/0"]
    assert isinstance(held, accepted)
    client.handle(held)
    assert client.phase is not phase


def test_client_ready_done_and_protect_once():
    rs, cohort = make_round()
    fresh = rs.clients[cohort[0]]
    assert fresh.phase is ClientPhase.READY
    _refuses_all_but(fresh, None)
    done = full_transcript().session.clients["client/0"]
    assert done.phase is ClientPhase.DONE
    _refuses_all_but(done, None)
    with pytest.raises(UnexpectedPhaseError):
        done.protect(TRANSCRIPT[MaskedInput][0].vector.astype(float))
