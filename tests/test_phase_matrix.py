"""The exhaustive phase-transition matrix of every role of every registered scheme.

Threat: a peer (or a replaying network) sending a message a role does not expect
in its current phase. For every role, every phase of its TRANSITIONS table and
every registered message type the table does not accept in that phase,
``handle`` must raise UnexpectedPhaseError before reading the message's fields.
"""

import dataclasses

import pytest

import secagg.ckks  # noqa: F401  (registers every scheme's message types for the matrix)
import secagg.masking  # noqa: F401
from secagg.errors import UnexpectedPhaseError
from secagg.protocol import Role, client_id
from secagg.rand import DeterministicRng
from secagg.schemes import AggregationConfig, available_schemes, create_scheme
from secagg.wire import Message, registered_types
from secagg_training.transport import InProcessTransport


class _Untouchable:
    """A field value that fails loudly if a role reads it before checking the phase."""

    def __getattr__(self, name):
        raise AssertionError(f"payload read ({name}) before the phase check")

    def __eq__(self, other):
        raise AssertionError("payload compared before the phase check")

    __hash__ = None


def _fake(cls: type[Message], recipient: str) -> Message:
    msg = object.__new__(cls)
    for field in dataclasses.fields(cls):
        object.__setattr__(msg, field.name, _Untouchable())
    object.__setattr__(msg, "recipient", recipient)
    object.__setattr__(msg, "sender", "server")
    return msg


def _roles(name: str) -> list[Role]:
    if name == "ckks":
        from secagg.ckks import ThresholdCKKS

        scheme = ThresholdCKKS(committee=3, threshold=2, max_clients=3, preset="TEST_INSECURE_N512")
    else:
        scheme = create_scheme(name, AggregationConfig(max_clients=3))
    rng = DeterministicRng.from_int(7)
    setup = scheme.setup(rng=rng.fork("setup"))
    roles: list[Role] = []
    if setup is not None:
        roles.append(setup.coordinator)
        InProcessTransport().run(setup)
    session = scheme.open_round(1, [client_id(i) for i in range(3)], 4, rng=rng.fork("round"))
    roles.append(session.coordinator)
    roles.extend(session.participants.values())
    return roles


@pytest.mark.parametrize("scheme", available_schemes())
def test_every_unexpected_message_is_refused_in_every_phase(scheme):
    roles = _roles(scheme)
    message_types = list(registered_types().values())
    checked = 0
    for role in roles:
        for phase, accepted in role.TRANSITIONS.items():
            for cls in message_types:
                if issubclass(cls, accepted):
                    continue
                role.phase = phase
                with pytest.raises(UnexpectedPhaseError):
                    role.handle(_fake(cls, role.party))
                assert role.phase is phase  # a refusal changes nothing
                checked += 1
    assert checked > 0
