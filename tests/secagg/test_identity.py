"""Party key files and the roster: 0600, no secrets in reprs, tamper-evident digests."""

from __future__ import annotations

import os
import stat

import pytest

from secagg.errors import DecodeError, ParameterError
from secagg.identity import PartyKeys, Roster, simulated_identities
from secagg.rand import DeterministicRng


def _keys(party: str = "client/0") -> PartyKeys:
    return PartyKeys.generate(party, rng=DeterministicRng.from_int(1))


def test_key_file_is_0600_and_round_trips(tmp_path):
    keys = _keys()
    path = keys.save(tmp_path / "client0.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = PartyKeys.load(path)
    assert loaded.public == keys.public


def test_key_file_never_overwritten(tmp_path):
    path = _keys().save(tmp_path / "k")
    with pytest.raises(ParameterError, match="must not exist"):
        _keys().save(path)


def test_group_readable_key_file_refused(tmp_path):
    path = _keys().save(tmp_path / "k")
    os.chmod(path, 0o640)
    with pytest.raises(ParameterError, match="0600"):
        PartyKeys.load(path)


def test_corrupt_key_file_is_decode_error(tmp_path):
    path = tmp_path / "k"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(DecodeError):
        PartyKeys.load(path)


def test_repr_carries_no_private_key():
    keys = _keys()
    secret = keys.signing.private_bytes_raw().hex()
    assert secret not in repr(keys)
    assert keys.agreement.private_bytes_raw().hex() not in repr(keys)


def test_roster_round_trip_and_digest_binds_every_key(tmp_path):
    keys, roster = simulated_identities(
        ["client/0", "client/1", "holder/0"], rng=DeterministicRng.from_int(2)
    )
    again = Roster.load(roster.save(tmp_path / "roster.json"))
    assert again.digest == roster.digest and dict(again) == dict(roster)
    assert roster.of_kind("holder") == ("holder/0",)
    other = PartyKeys.generate("client/1", rng=DeterministicRng.from_int(3)).public
    swapped = Roster([roster["client/0"], other, roster["holder/0"]])
    assert swapped.digest != roster.digest


@pytest.mark.parametrize(
    "raw", [b"", b"[]", b'{"format": "x"}', b'{"format": "secagg-roster/v1", "parties": [{}]}']
)
def test_malformed_roster_is_decode_error(raw):
    with pytest.raises(DecodeError):
        Roster.from_bytes(raw)


def test_duplicate_party_refused():
    keys = _keys()
    with pytest.raises(ParameterError, match="distinct"):
        Roster([keys.public, keys.public])


@pytest.mark.parametrize("party", ["server", "client/", "eve/1", "client/\n"])
def test_bad_party_ids_refused(party):
    with pytest.raises(ParameterError):
        PartyKeys.generate(party, rng=DeterministicRng.from_int(4))
