"""`secagg keys new` / `secagg keys roster`: party-local key files and the public roster."""

import json

from typer.testing import CliRunner

from secagg.identity import PartyKeys, Roster
from secagg_training.cli import app

runner = CliRunner()


def test_keys_new_writes_a_private_key_file_and_exports_only_the_public_part(tmp_path):
    result = runner.invoke(app, ["keys", "new", "--party", "client/3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    key_file = tmp_path / "client_3.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    keys = PartyKeys.load(key_file)
    secret = json.loads(key_file.read_text())
    assert secret["signing"] not in result.output and secret["agreement"] not in result.output
    public = json.loads((tmp_path / "client_3.pub.json").read_text())
    assert public == keys.public.to_json()
    assert keys.public.fingerprint in result.output


def test_keys_new_refuses_to_overwrite_and_bad_party_names(tmp_path):
    args = ["keys", "new", "--party", "holder/1", "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "holder_1.key").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "must not exist already" in again.output
    assert (tmp_path / "holder_1.key").read_bytes() == before
    bad = runner.invoke(app, ["keys", "new", "--party", "server", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "party must look like" in bad.output


def test_keys_roster_assembles_the_public_files(tmp_path):
    for party in ("client/0", "client/1", "holder/0"):
        runner.invoke(app, ["keys", "new", "--party", party, "--out", str(tmp_path)])
    pubs = sorted(str(p) for p in tmp_path.glob("*.pub.json"))
    out = tmp_path / "roster.json"
    result = runner.invoke(app, ["keys", "roster", *pubs, "--out", str(out)])
    assert result.exit_code == 0, result.output
    roster = Roster.load(out)
    assert list(roster) == ["client/0", "client/1", "holder/0"]
    assert roster.digest.hex() in result.output.replace("\n", "")
    duplicate = runner.invoke(app, ["keys", "roster", pubs[0], pubs[0], "--out", str(out)])
    assert duplicate.exit_code == 2 and "distinct" in duplicate.output
