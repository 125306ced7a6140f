"""Installed import names: none shared with another distribution, importable from any folder."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

OURS = ("secagg", "secagg_privacy", "secagg_training", "secagg_benchmarks")


def test_no_installed_top_level_name_is_shared_with_another_distribution():
    owners = importlib.metadata.packages_distributions()
    for name in OURS:
        assert owners.get(name) == ["secagg"], (name, owners.get(name))
    clashing = sorted(n for n, dists in owners.items() if "secagg" in dists and len(dists) > 1)
    assert clashing == []


def test_api_imports_from_a_folder_with_its_own_privacy_and_training(tmp_path):
    for folder in ("privacy", "training", "benchmarks"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("raise ImportError('the user folder')\n")
    probe = (
        "import secagg_training.federation as f, secagg_privacy.ledger as l, "
        "secagg_benchmarks.harness as h; "
        "print(f.FederationConfig().scheme, l.__name__, h.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ckks", "secagg_privacy.ledger", "secagg_benchmarks.harness"]
