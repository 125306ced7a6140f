"""The declared number of key holders that may collude with a malicious server (CKKS).

Threat: a server colluding with c holders opens two sets in one round (and so one client's
update) unless t ≥ ⌈(n + c + 1)/2⌉ (tests/ckks/test_ckks_review.py plays that attack). The
federation must carry the declared c from the CLI/TOML to the scheme and refuse a threshold
that does not meet it, instead of silently running at a weaker bound.
"""

from __future__ import annotations

import pytest

from secagg.errors import ParameterError
from secagg_training.cli import resolve_settings
from secagg_training.federation import Federation, FederationConfig

SMALL = {"clients": 4, "rounds": 1, "dp": False, "local_epochs": 1, "batch_size": 32, "lr": 0.2}


def test_declared_corrupt_holders_raise_the_default_threshold_and_are_recorded():
    fed = Federation(FederationConfig(scheme="ckks", committee=9, corrupt_holders=4, **SMALL))
    described = fed.scheme.describe()
    assert fed.scheme.params.threshold == 7  # ⌈(9 + 4 + 1)/2⌉
    assert described["corrupt_holders"] == 4
    assert fed.config.to_dict()["corrupt_holders"] == 4


def test_the_default_committee_tolerates_no_corrupt_holder():
    fed = Federation(FederationConfig(scheme="ckks", **SMALL))
    assert (fed.scheme.params.threshold, fed.scheme.describe()["corrupt_holders"]) == (3, 0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"committee": 5, "corrupt_holders": 1, "threshold": 3}, "threshold must be at least 4"),
        ({"committee": 5, "corrupt_holders": 5}, r"corrupt_holders must be an integer in \[0"),
        ({"committee": 5, "corrupt_holders": -1}, r"corrupt_holders must be an integer in \[0"),
        ({"scheme": "masking", "corrupt_holders": 1}, "corrupt_holders must be 0"),
    ],
)
def test_a_threshold_that_does_not_meet_the_declared_bound_is_refused(settings, message):
    with pytest.raises(ParameterError, match=message):
        FederationConfig(**{"scheme": "ckks", **SMALL, **settings})


def test_cli_flag_and_toml_key_reach_the_config():
    config, _ = resolve_settings({"committee": 9}, {"corrupt-holders": 4, "no-dp": True})
    assert (config.committee, config.corrupt_holders) == (9, 4)
