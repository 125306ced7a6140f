"""``secagg audit RUN_DIR``: the privacy budget audit of a finished run.

:func:`audit_run` reads ``RUN_DIR/result.json`` and the hash-chained ledger
``RUN_DIR/ledger`` and produces an :class:`AuditReport`:

- per client: ε spent (accountant of record, PLD) with an RDP cross-check, the
  budget, what remains, and how many more rounds the remainder buys at the
  client's own per-round cost;
- a guarantee statement in the style of "How to DP-fy ML" (Ponomareva et al.
  2023): unit of privacy, adjacency, sampling, accountant, δ, whether every
  round is covered, what is not accounted;
- the empirical one-run canary audit (:mod:`secagg_privacy.audit.canary`): a valid
  95% lower bound and a Gaussian-fit estimate beside the theoretical ε, with a
  verdict (``consistent`` / ``VIOLATION``).

It writes ``audit.json``, ``audit.md`` and ``epsilon_over_rounds.png``.
:func:`render_console` turns the report into rich renderables for the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dp_accounting import dp_event

from secagg_privacy import accounting
from secagg_privacy.audit import stats
from secagg_privacy.audit.canary import (
    CLIP_Z_LIMIT,
    DEFAULT_CANARIES,
    MAX_AUDIT_STEPS,
    SAMPLING_P_LIMIT,
    CanaryConfig,
    ModelFactory,
    StepTrainer,
    normalizer_for,
    run_canary_experiment,
)
from secagg_privacy.errors import LedgerIntegrityError, PrivacyError, PrivacyParameterError
from secagg_privacy.ledger import (
    KIND_BUDGET,
    KIND_CLIENT_LEVEL,
    KIND_DPSGD,
    LedgerEntry,
    PrivacyLedger,
    pin_digest,
)
from secagg_privacy.noise import ByteSource, OsByteSource, SecureGaussian, check_byte_source

__all__ = [
    "AuditReport",
    "CanaryAudit",
    "ClientStatus",
    "RunDirectoryError",
    "audit_run",
    "plot_epsilon_over_rounds",
    "print_report",
    "render_console",
    "render_markdown",
    "run_canary_audit",
    "write_report",
]

_BUDGET_PREFIX = KIND_BUDGET[: -len(KIND_DPSGD)]  # "budget:"
RESULT_FILE = "result.json"
LEDGER_FILE = "ledger"
AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
AUDIT_PLOT = "epsilon_over_rounds.png"
_MAX_EXTRA_ROUNDS = 100_000
_BASE_ROWS = 300
# Honest runs put the estimate within about ±30% of the claim (privacy.md, and
# measured here); twice the claim is a red flag worth a line, never a verdict.
SUSPICIOUS_ESTIMATE_RATIO = 2.0  # public digits rows the canaries hide among


class RunDirectoryError(PrivacyError):
    """The run directory, its ``result.json`` or its ledger is missing or unusable."""


# ----------------------------------------------------------------- report types


@dataclasses.dataclass(frozen=True)
class ClientStatus:
    """One client's privacy position at the end of the run."""

    client: str
    epsilon_spent: float  # accountant of record (PLD), as recorded in the ledger
    epsilon_rdp: float  # RDP cross-check of the same events (looser, never lower)
    delta: float
    budget_epsilon: float | None
    remaining_epsilon: float | None
    rounds_trained: int
    remaining_rounds: int | None  # more rounds affordable at this client's last round's cost
    rounds: list[tuple[int, float]]  # (round, cumulative ε after it)
    epsilon_in_result: float | None  # what result.json reports, for comparison


@dataclasses.dataclass(frozen=True)
class CanaryAudit:
    """The one-run canary audit of the client DP-SGD mechanism the run used."""

    audited_client: str
    noise_multiplier: float  # claimed σ (from the ledger)
    trained_noise_multiplier: float  # differs only in fault-injection experiments
    sample_rate: float
    steps: int
    steps_in_run: int
    clip_norm: float
    lr: float
    delta: float
    canaries: int
    theoretical_epsilon: float
    lower_bound: float
    beta: float
    guesses: int
    correct: int
    gaussian_mu: float
    gaussian_epsilon_estimate: float
    ceiling: float  # the largest bound these canaries could give (every guess right)
    verdict: str
    seconds: float
    method: str
    noise: stats.NoiseScaleCheck  # the applied noise std vs σ·C: has power at every ε
    # the noise actually applied to EVERY parameter tensor (update − exact clipped sum)
    tensor_noise: dict[str, stats.NoiseScaleCheck] = dataclasses.field(default_factory=dict)
    sampled_rows: int = 0  # rows the production trainer used, over all audited steps
    row_trials: int = 0  # rows × steps: Binomial(row_trials, q) when sampling is honest
    sampling_p_value: float = 1.0
    clip_z: float = 0.0  # canaries' summed contribution minus C·direction, in σC·√K
    clip_excess: float = 0.0  # mean unclipped − clipped canary norm in σC: the clip test's power
    clip_samples: int = 0
    bad_forwards: int = 0
    trainer: str = "secagg_privacy.dpsgd.train_dp_sgd"


@dataclasses.dataclass(frozen=True)
class AuditReport:
    """Everything ``secagg audit`` prints and writes."""

    run_dir: str
    scheme: str | None
    delta: float
    accountant: str
    clients: list[ClientStatus]
    client_level: list[ClientStatus]
    guarantee: dict[str, Any]
    canary: CanaryAudit | None
    findings: list[str]  # problems: uncovered rounds, ε mismatches, a VIOLATION
    caveats: list[str]  # limits and red flags that are not proofs of a problem
    files: list[str]

    @property
    def status(self) -> str:
        """``passed`` only if no problem was found *and* a check that could fail at this ε
        (the applied noise scale) ran; ``FAILED`` on any finding; else ``incomplete``."""
        if self.findings:
            return "FAILED"
        checked = self.canary is not None and self.canary.noise.verdict == stats.NOISE_OK
        return "passed" if checked else "incomplete"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def epsilon_max(self) -> float:
        return max((c.epsilon_spent for c in self.clients), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "epsilon_max": self.epsilon_max,
            "passed": self.passed,
            "status": self.status,
        }


# ----------------------------------------------------------------- reading the run


def _read_result(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise RunDirectoryError(f"run directory must exist; got {str(run_dir)!r}")
    path = run_dir / RESULT_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{RESULT_FILE} must exist in the run directory; got none")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunDirectoryError(f"{RESULT_FILE} must be valid JSON; got unparsable text") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("privacy"), dict):
        raise RunDirectoryError(f"{RESULT_FILE} must be an object with a 'privacy' block")
    return doc


def _pinned_head(privacy: Mapping[str, Any]) -> tuple[int, str]:
    head = privacy.get("ledger_head")
    if (
        not isinstance(head, list | tuple)
        or len(head) != 2
        or isinstance(head[0], bool)
        or not isinstance(head[0], int)
        or head[0] < 1
        or not isinstance(head[1], str)
    ):
        raise RunDirectoryError(
            "privacy.ledger_head must pin the ledger as [count ≥ 1, hash]; got "
            + ("none" if head is None else "a malformed value")
        )
    return (head[0], head[1])


def _open_ledger(run_dir: Path, privacy: Mapping[str, Any]) -> PrivacyLedger:
    path = run_dir / LEDGER_FILE
    if not path.is_file():
        note = "" if privacy.get("enabled", True) else " (result.json says DP was off)"
        raise RunDirectoryError(f"ledger must exist in the run directory{note}; got none")
    head = _pinned_head(privacy)
    # Read-only, exactly the pinned head: LedgerIntegrityError (tampering, truncation,
    # appended entries, a missing meta row or trigger) propagates as is.
    return PrivacyLedger.open_readonly(path, expected_head=head)


def _check_rounds(result: Mapping[str, Any]) -> None:
    """``rounds`` must be a list of {round: int, participants: [str]} (fail with one line)."""
    rounds = result.get("rounds", [])
    ok = isinstance(rounds, list) and all(
        isinstance(r, dict)
        and isinstance(r.get("round"), int)
        and not isinstance(r.get("round"), bool)
        and isinstance(r.get("participants", []), list)
        and all(isinstance(c, str) for c in r.get("participants", []))
        for r in rounds
    )
    if not ok:
        raise RunDirectoryError(
            f"{RESULT_FILE} rounds must be a list of {{round: int, participants: [str]}}; "
            "got a malformed value"
        )


# ----------------------------------------------------------------- budgets


def _remaining_rounds(entries: list[LedgerEntry], budget: float | None, delta: float) -> int | None:
    """How many more rounds at the last round's cost stay within ``budget``."""
    if budget is None or not entries or entries[-1].event is None:
        return None
    state = accounting.AccountantState(tuple(e.event for e in entries if e.event is not None))
    step = entries[-1].event

    def fits(k: int) -> bool:
        more = dp_event.SelfComposedDpEvent(step, k)
        total = accounting.compose([state.composed, more])
        return accounting.epsilon_of_event(total, delta=delta) <= budget

    if not fits(0):
        return 0
    low, high = 0, 1
    while fits(high):  # exponential search, then bisection on the first failure
        low, high = high, high * 2
        if high > _MAX_EXTRA_ROUNDS:
            return _MAX_EXTRA_ROUNDS
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def _budget_delta(ledger: PrivacyLedger, client: str, kind: str) -> float | None:
    """δ of the client's first (round-0) budget for ``kind``: the δ every ε is stated at."""
    budgets = ledger.entries(client=client, kind=_BUDGET_PREFIX + kind)
    return float(budgets[0].body["delta"]) if budgets else None


def _client_statuses(
    ledger: PrivacyLedger, kind: str, reported: Mapping[str, Any]
) -> list[ClientStatus]:
    """Per client: ε recomputed from *all* its stored events at its budget's δ.

    Neither the stored ε nor a per-entry δ is trusted: an appended entry with a
    large δ, or an edited ε, cannot lower what is shown here.
    """
    out = []
    for client, summary in ledger.summary(kind=kind).items():
        entries = ledger.entries(client=client, kind=kind)
        state = ledger.accountant_state(client, kind=kind)
        budget_delta = _budget_delta(ledger, client, kind)
        delta = budget_delta if budget_delta is not None else summary.delta
        spent = state.epsilon(delta=delta) if state.events else 0.0
        rdp = accounting.epsilon_rdp_of_event(state.composed, delta=delta) if state.events else 0.0
        first = ledger.budget_history(client, scope=kind)
        budget = first[0].epsilon if first else None
        remaining = None if budget is None else max(0.0, budget - spent)
        value = reported.get(client)
        out.append(
            ClientStatus(
                client=client,
                epsilon_spent=float(spent),
                epsilon_rdp=float(rdp),
                delta=delta,
                budget_epsilon=budget,
                remaining_epsilon=remaining,
                rounds_trained=summary.entries,
                remaining_rounds=_remaining_rounds(entries, budget, delta),
                rounds=_cumulative(entries, delta),
                epsilon_in_result=(
                    float(value)
                    if isinstance(value, int | float) and not isinstance(value, bool)
                    else None
                ),
            )
        )
    return out


def _cumulative(entries: list[LedgerEntry], delta: float) -> list[tuple[int, float]]:
    """(round, cumulative ε after it), recomputed at ``delta``."""
    out = []
    state = accounting.AccountantState()
    for e in entries:
        if e.event is not None:
            state = state.with_event(e.event)
        out.append((e.round, state.epsilon(delta=delta)))
    return out


def _ledger_findings(ledger: PrivacyLedger, kind: str) -> list[str]:
    """Budgets are set once, at round 0; δ never changes afterwards; spends need a budget."""
    found = []
    for client in ledger.clients(kind=kind):
        budgets = ledger.entries(client=client, kind=_BUDGET_PREFIX + kind)
        spends = ledger.entries(client=client, kind=kind)
        if not budgets or budgets[0].round != 0:
            found.append(f"{client}: no budget set at round 0 before its spends")
            continue
        if len(budgets) > 1:
            found.append(
                f"{client}: budget changed after round 0 ({len(budgets) - 1} later budget "
                f"entries, last ε={budgets[-1].body.get('budget_epsilon')})"
            )
        empty = [e.seq for e in spends if not e.body.get("steps")]
        if empty:
            found.append(f"{client}: spend entries {empty[:5]} records no DP mechanism (0 steps)")
        delta = budgets[0].body.get("delta")
        changed = [e.seq for e in [*budgets, *spends] if e.body.get("delta") != delta]
        if changed:
            found.append(f"{client}: δ changed after round 0 (entries {changed[:5]})")
    return found


def _reported_findings(privacy: Mapping[str, Any], clients: list[ClientStatus]) -> list[str]:
    """result.json's per-client ε must be a number for exactly the ledger's clients."""
    reported = privacy.get("epsilon_per_client")
    if not isinstance(reported, dict):
        return ["result.json privacy.epsilon_per_client must be an object; got a malformed value"]
    found = []
    ledger_clients = {c.client for c in clients}
    for c in clients:
        value = reported.get(c.client)
        if c.client not in reported:
            found.append(f"{c.client}: in the ledger but missing from result.json")
        elif c.epsilon_in_result is None:
            found.append(f"{c.client}: result.json ε must be a number; got {type(value).__name__}")
    extra = sorted(set(reported) - ledger_clients)
    if extra:
        found.append(f"result.json reports clients the ledger does not hold: {extra[:5]}")
    return found


def _pin_findings(privacy: Mapping[str, Any]) -> list[str]:
    """result.json's privacy block must match the pin it carries (publish the pin)."""
    pin = privacy.get("pin")
    if not isinstance(pin, str):
        return ["result.json privacy block carries no pin: its numbers are not bound to the ledger"]
    try:
        expected = pin_digest(dict(privacy))
    except PrivacyError:
        return ["result.json privacy block must be finite JSON to verify its pin"]
    if expected != pin:
        return ["result.json privacy block does not match its pin: it was edited after the run"]
    return []


# ----------------------------------------------------------------- checks


def _coverage_findings(result: Mapping[str, Any], ledger: PrivacyLedger) -> list[str]:
    """Every participant of every round must have a DP-SGD ledger entry for that round."""
    missing = []
    for record in result.get("rounds") or []:
        if not isinstance(record, dict):
            continue
        r = record.get("round")
        for client in record.get("participants") or []:
            if isinstance(r, int) and not ledger.has_entry(str(client), r, KIND_DPSGD):
                missing.append(f"{client}@{r}")
    reported = {r.get("round") for r in result.get("rounds") or [] if isinstance(r, dict)}
    unreported = sorted({e.round for e in ledger.entries(kind=KIND_DPSGD)} - reported)
    found = []
    if unreported:
        found.append(f"ledger spends in rounds absent from result.json: {unreported[:10]}")
    if not missing:
        return found
    shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
    return [f"rounds not covered by the ledger ({len(missing)} client-rounds): {shown}", *found]


def _understates(reported: float, recomputed: float) -> bool:
    """A reported ε below the recomputed one, beyond float noise, is a false claim."""
    return reported < recomputed - 1e-9 * max(1.0, recomputed)


def _epsilon_findings(clients: list[ClientStatus]) -> list[str]:
    found = []
    for c in clients:
        reported = c.epsilon_in_result
        if reported is not None and (
            _understates(reported, c.epsilon_spent)
            or not math.isclose(reported, c.epsilon_spent, rel_tol=0.01, abs_tol=1e-9)
        ):
            found.append(
                f"{c.client}: result.json reports ε={reported:.6f}, "
                f"the ledger {c.epsilon_spent:.6f}"
            )
        if c.budget_epsilon is not None and c.epsilon_spent > c.budget_epsilon * (1 + 1e-9):
            found.append(
                f"{c.client}: ε spent {c.epsilon_spent:.4f} exceeds its budget "
                f"{c.budget_epsilon:.4f}"
            )
    return found


# result.json's "unit" for the ledger's record-level unit (secagg_training.privacy_plan.UNIT)
_RESULT_UNIT = {"one training record of one client": "record-level, per client"}


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _headline_findings(
    privacy: Mapping[str, Any], ledger: PrivacyLedger, clients: list[ClientStatus]
) -> list[str]:
    """result.json's ε max, δ, unit, adjacency and guarantee line must be the ledger's."""
    first = ledger.entries(kind=KIND_DPSGD)[0].body
    eps_max = max(c.epsilon_spent for c in clients)
    delta = clients[0].delta
    found = []
    reported_max = _number(privacy.get("epsilon_max"))
    if reported_max is None or _understates(reported_max, eps_max):
        found.append(
            f"result.json epsilon_max must be at least the ledger's {eps_max:.6f}; "
            f"got {privacy.get('epsilon_max')!r}"
        )
    if _number(privacy.get("delta")) != delta:
        found.append(
            f"result.json delta must be the ledger's {delta:g}; got {privacy.get('delta')!r}"
        )
    if "adjacency" in privacy and privacy["adjacency"] != first.get("adjacency"):
        found.append(
            f"result.json adjacency must be the ledger's {first.get('adjacency')!r}; "
            f"got {privacy['adjacency']!r}"
        )
    unit = _RESULT_UNIT.get(str(first.get("unit")))
    if "unit" in privacy and privacy["unit"] != unit:
        found.append(f"result.json unit must be {unit!r}; got {privacy['unit']!r}")
    found += _schedule_findings(privacy, ledger)
    if "guarantee" in privacy:
        expected = accounting.guarantee_label(
            unit=str(first.get("unit")),
            adjacency=str(first.get("adjacency")),
            epsilon=eps_max,
            delta=delta,
        )
        if privacy["guarantee"] != expected:
            found.append(
                f"result.json guarantee must read {expected!r}; got {privacy['guarantee']!r}"
            )
    return found


def _schedule_findings(privacy: Mapping[str, Any], ledger: PrivacyLedger) -> list[str]:
    """q must be min(1, B/N) of the declared N and public B that the ledger records."""
    found = []
    for e in ledger.entries(kind=KIND_DPSGD):
        extra = e.body.get("extra")
        n = extra.get("nominal_records") if isinstance(extra, dict) else None
        b = extra.get("expected_batch_size") if isinstance(extra, dict) else None
        if n is None or b is None:
            continue  # a ledger from before N was recorded
        if privacy.get("nominal_records") != n:
            found.append(
                f"result.json nominal_records must be the ledger's N = {n}; "
                f"got {privacy.get('nominal_records')!r}"
            )
            break
        q = e.body.get("sample_rate")
        if not (isinstance(n, int) and isinstance(b, int | float) and n > 0) or q != min(
            1.0, b / n
        ):
            found.append(
                f"{e.client}@{e.round}: q = {q} is not min(1, B/N) of the recorded "
                f"B = {b}, N = {n}"
            )
    return found


def _round_epsilon_findings(result: Mapping[str, Any], clients: list[ClientStatus]) -> list[str]:
    """Each round's reported ε (per client and max) must not be below the ledger's after it."""
    after = {c.client: dict(c.rounds) for c in clients}
    found = []
    for record in result.get("rounds") or []:
        r = record.get("round") if isinstance(record, dict) else None
        per_client = record.get("epsilon") if isinstance(record, dict) else None
        if not isinstance(r, int) or not isinstance(per_client, dict):
            continue
        for client, value in per_client.items():
            truth = after.get(str(client), {}).get(r)
            reported = _number(value)
            if truth is not None and (reported is None or _understates(reported, truth)):
                found.append(
                    f"{client}@{r}: result.json round ε {value!r} is below the ledger's {truth:.6f}"
                )
        truths = [after[c][r] for c in after if r in after[c]]
        reported_max = _number(record.get("epsilon_max"))
        if (
            "epsilon_max" in record
            and truths
            and (reported_max is None or _understates(reported_max, max(truths)))
        ):
            found.append(
                f"round {r}: result.json epsilon_max is below the ledger's {max(truths):.6f}"
            )
    return found


def _event_findings(ledger: PrivacyLedger) -> list[str]:
    """Each spend entry's DP event must be exactly the one its body's σ, q, steps describe.

    The ε of record is composed from the stored events while the canary audit
    trains with the body's σ, q: a rewritten event (e.g. a larger σ) with a
    consistent ε and a re-made pin would otherwise be certified.
    """
    found = []
    for e in ledger.entries(kind=KIND_DPSGD):
        body = e.body
        try:
            rebuilt = accounting.sgd_event(
                noise_multiplier=float(body["noise_multiplier"]),
                sample_rate=float(body["sample_rate"]),
                steps=int(body["steps"]),
            )
            stored = e.event
        except (KeyError, TypeError, ValueError, PrivacyError):
            found.append(
                f"{e.client}@{e.round}: entry {e.seq} must record σ, q, steps and an event"
            )
            continue
        if stored is None or accounting.event_to_json(rebuilt) != accounting.event_to_json(stored):
            found.append(
                f"{e.client}@{e.round}: entry {e.seq}'s DP event does not match its σ = "
                f"{body['noise_multiplier']}, q = {body['sample_rate']}, steps = {body['steps']}"
            )
    return found


def _recompute_finding(ledger: PrivacyLedger) -> list[str]:
    try:
        ledger.verify(recompute_epsilon=True)
    except LedgerIntegrityError as exc:
        return [f"ledger ε does not recompute from its stored events: {exc}"]
    return []


# ----------------------------------------------------------------- guarantee


def _guarantee(
    ledger: PrivacyLedger, clients: list[ClientStatus], findings: list[str], privacy_pin: Any
) -> dict[str, Any]:
    spends = ledger.entries(kind=KIND_DPSGD)
    first = spends[0].body
    distinct = sorted({str(e.body.get("accountant")) for e in spends})
    eps_max = max(c.epsilon_spent for c in clients)
    covered = not any(f.startswith("rounds not covered") for f in findings)
    strength = (
        "strong (ε ≤ 1)"
        if eps_max <= 1
        else "reasonable (ε ≤ 10)"
        if eps_max <= 10
        else "weak (ε > 10): the formal guarantee is loose"
    )
    return {
        "unit": first.get("unit"),
        "adjacency": first.get("adjacency"),
        "sampling": first.get("sampling"),
        "accountant": "; ".join(distinct),
        "cross_check": "RDP (dp-accounting), reported beside every ε; never Opacus's GDP",
        "delta": first.get("delta"),
        "epsilon_max": eps_max,
        "strength": strength,
        "threat_model": first.get("threat_model"),
        "library_versions": first.get("versions"),
        "all_rounds_covered": covered,
        "checkpoints": (
            "every DP-SGD step of every round is composed, so every intermediate and final "
            "model a client released is covered"
            if covered
            else "NOT every round is covered: see findings"
        ),
        "not_accounted": [
            "hyperparameter tuning on private data (σ, clip, lr, rounds were not privately tuned)",
            "the test-set evaluation and any data-dependent choice outside DP-SGD",
            "client-level participation (see the client-level ledger when present)",
        ],
        "statement": _statement(first, eps_max, covered),
        "pin": privacy_pin,
    }


def _statement(first: Mapping[str, Any], eps_max: float, covered: bool) -> str:
    cover = (
        "All rounds and all intermediate models are covered"
        if covered
        else "Some rounds are NOT covered (see findings)"
    )
    sampling = str(first.get("sampling"))
    sampling = "Poisson" if sampling == "poisson" else sampling
    return (
        f"Each client's released model updates satisfy (ε, δ)-DP with "
        f"ε ≤ {accounting.format_epsilon(eps_max)} and "
        f"δ = {first.get('delta'):g}, for the unit '{first.get('unit')}' under "
        f"{first.get('adjacency')} adjacency with {sampling} sampling, composed over every "
        f"DP-SGD step of every round by {first.get('accountant')} (RDP as cross-check). "
        f"{cover}. Hyperparameter tuning is not accounted. "
        f"Threat model: {first.get('threat_model')}."
    )


# ----------------------------------------------------------------- canary audit


def _audited_mechanism(
    ledger: PrivacyLedger, clients: list[ClientStatus]
) -> tuple[str, float, float, float, int]:
    """(client, σ, q, clip, steps) of the mechanism with the most steps of the max-ε client."""
    worst = max(clients, key=lambda c: c.epsilon_spent).client
    groups: dict[tuple[float, float, float], int] = {}
    for e in ledger.entries(client=worst, kind=KIND_DPSGD):
        key = (
            float(e.body["noise_multiplier"]),
            float(e.body["sample_rate"]),
            float(e.body["clip_norm"]),
        )
        groups[key] = groups.get(key, 0) + int(e.body["steps"])
    (sigma, q, clip), steps = max(groups.items(), key=lambda kv: kv[1])
    return worst, sigma, q, clip, steps


def _public_base_data() -> tuple[np.ndarray, np.ndarray, int]:
    """Public rows the canaries hide among: scikit-learn's digits, features in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data[:_BASE_ROWS] / 16.0).astype(np.float32)
    return x, digits.target[:_BASE_ROWS].astype(np.int64), 10


def run_canary_audit(
    *,
    client: str,
    noise_multiplier: float,
    sample_rate: float,
    clip_norm: float,
    steps: int,
    lr: float,
    delta: float,
    rng_source: ByteSource | None = None,
    canaries: int = DEFAULT_CANARIES,
    actual_noise_multiplier: float | None = None,
    base_data: tuple[np.ndarray, np.ndarray, int] | None = None,
    model_factory: ModelFactory | None = None,
    production: bool = True,
) -> CanaryAudit:
    """Run the one-run canary audit of DP-SGD(σ, q, steps, C) and score it.

    ``actual_noise_multiplier`` injects a fault (train with a σ different from
    the claimed one) to test the auditor itself; it needs ``production=False``
    (the direct :func:`secagg_privacy.dpsgd.train_dp_sgd` step, for unit tests only).
    ``production=True`` (the default, and what ``secagg audit`` uses) drives every
    step through the client trainer the federation runs, ``PrivacyPlan.train``.
    """
    source = OsByteSource() if rng_source is None else check_byte_source("rng_source", rng_source)
    audited = min(steps, MAX_AUDIT_STEPS)
    config = CanaryConfig(
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        steps=audited,
        max_grad_norm=clip_norm,
        lr=lr,
        delta=delta,
        canaries=canaries,
        actual_noise_multiplier=actual_noise_multiplier,
    )
    x, y, classes = base_data if base_data is not None else _public_base_data()
    trainer = None
    if production:
        if actual_noise_multiplier is not None:
            raise PrivacyParameterError(
                "actual_noise_multiplier must be None for the production trainer; got "
                f"{actual_noise_multiplier}"
            )
        rows = len(np.unique(np.asarray(x).reshape(len(x), -1), axis=0))  # as the experiment
        normalizer = normalizer_for(sample_rate, rows, canaries)
        trainer = production_step_trainer(
            client=client,
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            clip_norm=clip_norm,
            lr=lr,
            delta=delta,
            normalizer=normalizer,
            seed=source.random_bytes(32),
        )
    result = run_canary_experiment(
        x,
        y,
        config=config,
        num_classes=classes,
        rng=source,
        noise=SecureGaussian(source),
        model_factory=model_factory,
        trainer=trainer,
    )
    bound = stats.one_run_audit(result.scores, result.included, delta=delta)
    fit = stats.gaussian_fit_estimate(result.scores, result.included, delta=delta)
    noise_check = stats.noise_scale_check(
        result.noise_squares,
        result.included,
        samples_per_canary=result.noise_samples_per_canary,
        claimed_std=noise_multiplier * clip_norm,
    )
    return CanaryAudit(
        audited_client=client,
        noise_multiplier=noise_multiplier,
        trained_noise_multiplier=config.trained_noise_multiplier,
        sample_rate=sample_rate,
        steps=audited,
        steps_in_run=steps,
        clip_norm=clip_norm,
        lr=lr,
        delta=delta,
        canaries=canaries,
        theoretical_epsilon=result.theoretical_epsilon,
        lower_bound=bound.epsilon_lower,
        beta=bound.beta,
        guesses=bound.guesses,
        correct=bound.correct,
        gaussian_mu=fit.mu,
        gaussian_epsilon_estimate=fit.epsilon_estimate,
        ceiling=stats.audit_ceiling(canaries, delta=delta),
        verdict=stats.verdict(bound.epsilon_lower, result.theoretical_epsilon),
        seconds=result.seconds,
        method=(
            "one-run audit (Steinke, Nasr & Jagielski 2023), white-box: "
            f"{canaries} isolated-coordinate canaries each included with probability 1/2 "
            "(CSPRNG), trained through secagg_privacy.dpsgd.train_dp_sgd, every intermediate model "
            "observed, per-step likelihood-ratio scores; guess counts fixed in advance, "
            f"Bonferroni over {len(bound.guess_counts)} counts; plus the noise std actually "
            "applied, estimated from the excluded canaries' pure-noise columns (χ² interval)"
        ),
        noise=noise_check,
        tensor_noise={
            name: stats.noise_scale_check(
                np.array([sq]),
                np.array([False]),
                samples_per_canary=max(count, 1),
                claimed_std=noise_multiplier * clip_norm,
            )
            for name, (sq, count) in result.tensor_noise.items()
        },
        sampled_rows=result.sampled_rows,
        row_trials=result.row_trials,
        sampling_p_value=_binomial_p(result.sampled_rows, result.row_trials, sample_rate),
        clip_z=result.clip_z,
        clip_excess=result.clip_excess,
        clip_samples=result.clip_samples,
        bad_forwards=result.bad_forwards,
        trainer=(
            "secagg_training.privacy_plan.PrivacyPlan.train"
            if production
            else "secagg_privacy.dpsgd.train_dp_sgd"
        ),
    )


def _binomial_p(successes: int, trials: int, q: float) -> float:
    if trials == 0 or q >= 1.0:
        return 1.0 if successes == trials else 0.0
    from scipy.stats import binomtest

    return float(binomtest(successes, trials, q).pvalue)


def production_step_trainer(
    *,
    client: str,
    noise_multiplier: float,
    sample_rate: float,
    clip_norm: float,
    lr: float,
    delta: float,
    normalizer: float,
    seed: bytes,
) -> StepTrainer:
    """One DP-SGD step through the federation's client trainer, ``PrivacyPlan.train``.

    The plan is built like a run's (σ given, C, δ, plain SGD at ``lr``); its schedule
    is then set to one step of the recorded q with the experiment's public
    normalizer, so every audited step is one call of the production trainer with
    the production noise source, sampler fork and budget guard.
    """
    from secagg.rand import DeterministicRng
    from secagg_training.client import LocalSettings, LocalTask
    from secagg_training.privacy_plan import PrivacyPlan

    plan = PrivacyPlan(
        [client],
        nominal_records=1,
        rounds=1,
        batch_size=1,
        local_epochs=1,
        lr=lr,
        optimizer="sgd",
        target_epsilon=1.0,
        budget_epsilon=1e9,  # the audit's own run: the guard must not stop it
        delta=delta,
        max_grad_norm=clip_norm,
        noise_multiplier=noise_multiplier,
        rng=DeterministicRng(seed),
    )
    schedule = plan.schedules[client]
    params = dataclasses.replace(
        schedule.params, sample_rate=sample_rate, steps=1, expected_batch_size=normalizer
    )
    plan.schedules[client] = dataclasses.replace(
        schedule, sample_rate=sample_rate, steps_per_round=1, params=params
    )
    settings = LocalSettings(epochs=1, batch_size=1, lr=lr, optimizer="sgd")
    generator = torch.Generator().manual_seed(0)  # unused by the DP trainer (no shuffling)

    def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, index: int) -> object:
        return plan.train(LocalTask(client, index + 1, model, x, y, settings, generator))

    return step


def _noise_findings(check: stats.NoiseScaleCheck) -> list[str]:
    """A noise std outside the claim (either way), or a check too weak to tell."""
    if check.verdict == stats.NOISE_OK:
        return []
    if check.verdict == stats.NOISE_UNDERPOWERED:
        return [
            f"noise-scale check underpowered: {check.samples} pure-noise samples cannot "
            "resolve a 10% shortfall; use more canaries"
        ]
    return [
        f"noise-scale check {check.verdict}: applied noise std {check.estimated_std:.4g} is "
        f"{check.ratio:.3f}× the claimed σ·C = {check.claimed_std:.4g} (interval "
        f"{check.ratio_low:.3f}–{check.ratio_high:.3f}, {check.samples} samples): the ledger "
        "does not describe the mechanism that runs"
    ]


def _mechanism_findings(audit: CanaryAudit) -> list[str]:
    """Noise on every tensor, the sampling rate and per-example clipping, each checked directly."""
    found = []
    for name, check in audit.tensor_noise.items():
        if check.verdict in (stats.NOISE_TOO_LOW, stats.NOISE_TOO_HIGH):
            found.append(
                f"noise on parameter {name} {check.verdict}: applied std is {check.ratio:.3f}× "
                f"the claimed σ·C = {check.claimed_std:.4g} ({check.samples} samples)"
            )
    if audit.bad_forwards:
        found.append(
            f"the trainer did not run exactly one batch of the data set per step in "
            f"{audit.bad_forwards} of {audit.steps} steps: the recorded steps are not what ran"
        )
    if audit.sampling_p_value < SAMPLING_P_LIMIT:
        rate = audit.sampled_rows / audit.row_trials if audit.row_trials else math.nan
        found.append(
            f"sampling rate mismatch: rows were sampled at rate {rate:.4f}, the ledger "
            f"records q = {audit.sample_rate:.4f} (binomial p = {audit.sampling_p_value:.1e})"
        )
    if abs(audit.clip_z) > CLIP_Z_LIMIT:
        found.append(
            f"per-example clipping broken: sampled canaries moved the model by "
            f"{audit.clip_z:+.1f} σ from their clipped gradient (C = {audit.clip_norm:g}, "
            f"{audit.clip_samples} canary-steps)"
        )
    return found


def _theory_findings(
    audit: CanaryAudit, ledger: PrivacyLedger, clients: list[ClientStatus]
) -> list[str]:
    """When the audited mechanism is the client's whole run, its ε must be the ledger's."""
    mechanisms = {
        (e.body.get("noise_multiplier"), e.body.get("sample_rate"), e.body.get("clip_norm"))
        for e in ledger.entries(client=audit.audited_client, kind=KIND_DPSGD)
        if e.body.get("steps")
    }
    if len(mechanisms) != 1 or audit.steps != audit.steps_in_run:
        return []
    spent = next(c.epsilon_spent for c in clients if c.client == audit.audited_client)
    if math.isclose(audit.theoretical_epsilon, spent, rel_tol=1e-3):
        return []
    return [
        f"{audit.audited_client}: the audited mechanism's ε {audit.theoretical_epsilon:.4f} "
        f"differs from the ε {spent:.4f} the ledger's events compose to"
    ]


def _production_model(result: Mapping[str, Any]) -> ModelFactory | None:
    """The run's own model architecture (``config.model``), when the run recorded one."""
    from secagg_training.models import MODELS

    config = result.get("config")
    name = config.get("model") if isinstance(config, dict) else None
    return MODELS.get(name) if isinstance(name, str) else None


def _canary_warnings(audit: CanaryAudit) -> list[str]:
    """Caveats that are not violations: a blind spot, or an estimate far above the claim."""
    out = []
    claimed = accounting.format_epsilon(audit.theoretical_epsilon)  # rounded up
    if audit.verdict == stats.CONSISTENT and audit.theoretical_epsilon >= audit.ceiling:
        out.append(
            f"note: the claimed ε {claimed} is above what {audit.canaries} "
            f"canaries can certify ({audit.ceiling:.3f}); the bound checks consistency but could "
            "not reveal a violation at this ε (the noise-scale check can)"
        )
    if audit.trainer.startswith("training.") and _clip_power(audit) < 2 * CLIP_Z_LIMIT:
        out.append(
            f"note: the canaries' gradients barely exceed C = {audit.clip_norm:g}, so the "
            "clipping check could not reveal disabled clipping on this run"
        )
    if audit.gaussian_epsilon_estimate > SUSPICIOUS_ESTIMATE_RATIO * audit.theoretical_epsilon:
        out.append(
            f"warning: the Gaussian-fit estimate {audit.gaussian_epsilon_estimate:.3f} is more "
            f"than {SUSPICIOUS_ESTIMATE_RATIO:g}× the theoretical ε "
            f"{claimed}; an estimate is not proof, but the noise may be smaller than recorded"
        )
    return out


def _lr_of(result: Mapping[str, Any]) -> float:
    config = result.get("config")
    lr = config.get("lr") if isinstance(config, dict) else None
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not (lr > 0):
        raise RunDirectoryError("result.json config.lr must be a positive number for the audit")
    return float(lr)


# ----------------------------------------------------------------- entry point


def audit_run(
    run_dir: Path,
    *,
    out_dir: Path | None = None,
    rng_source: ByteSource | None = None,
    canary: bool = True,
    canaries: int = DEFAULT_CANARIES,
    base_data: tuple[np.ndarray, np.ndarray, int] | None = None,
    model_factory: ModelFactory | None = None,
) -> AuditReport:
    """Audit a finished run and write ``audit.json``, ``audit.md``, ``epsilon_over_rounds.png``.

    Args:
        run_dir: the run directory (``result.json`` and ``ledger``).
        out_dir: where to write the three files (default: ``run_dir``).
        rng_source: byte source for the canary experiment (inclusion bits,
            sampling, noise); default the OS CSPRNG. Tests pass a deterministic one.
        canary: run the empirical canary audit (the slow part, ~seconds).
        canaries: number of canaries m.
        base_data: ``(features, labels, num_classes)`` the canaries hide among;
            default 300 public rows of scikit-learn's digits.
        model_factory: instrument model ``(in_features, num_classes) -> Module``
            (Linear layers only); default logistic regression.

    Raises:
        RunDirectoryError: missing/unreadable run directory, result.json or ledger.
        LedgerIntegrityError: the ledger's hash chain does not verify.
    """
    run_dir = Path(run_dir)
    result = _read_result(run_dir)
    privacy = result["privacy"]
    _check_rounds(result)
    ledger = _open_ledger(run_dir, privacy)
    try:
        report = _build_report(
            run_dir, result, ledger, rng_source, canary, canaries, base_data, model_factory
        )
    finally:
        ledger.close()
    target = Path(out_dir) if out_dir is not None else run_dir
    report = dataclasses.replace(report, files=[AUDIT_JSON, AUDIT_MD, AUDIT_PLOT])
    write_report(report, target)
    return report


def _build_report(
    run_dir: Path,
    result: Mapping[str, Any],
    ledger: PrivacyLedger,
    rng_source: ByteSource | None,
    canary: bool,
    canaries: int,
    base_data: tuple[np.ndarray, np.ndarray, int] | None,
    model_factory: ModelFactory | None,
) -> AuditReport:
    privacy = result["privacy"]
    reported = privacy.get("epsilon_per_client") or {}
    clients = _client_statuses(ledger, KIND_DPSGD, reported if isinstance(reported, dict) else {})
    if not clients or not ledger.entries(kind=KIND_DPSGD):
        raise RunDirectoryError("ledger must hold at least one DP-SGD entry; got none")
    client_level = _client_statuses(ledger, KIND_CLIENT_LEVEL, {})
    findings = (
        _pin_findings(privacy)
        + _ledger_findings(ledger, KIND_DPSGD)
        + _ledger_findings(ledger, KIND_CLIENT_LEVEL)
        + _reported_findings(privacy, clients)
        + _coverage_findings(result, ledger)
        + _epsilon_findings(clients)
        + _recompute_finding(ledger)
        + _event_findings(ledger)
        + _headline_findings(privacy, ledger, clients)
        + _round_epsilon_findings(result, clients)
    )
    guarantee = _guarantee(ledger, clients, findings, privacy.get("pin"))
    caveats: list[str] = []
    audit = None
    mechanism = _audited_mechanism(ledger, clients) if canary else None
    if mechanism is not None and mechanism[4] == 0:
        caveats.append("canary audit not run: the ledger records no DP-SGD steps")
        mechanism = None
    if mechanism is not None:
        client, sigma, q, clip, steps = mechanism
        delta = next(c.delta for c in clients if c.client == client)
        audit = run_canary_audit(
            client=client,
            noise_multiplier=sigma,
            sample_rate=q,
            clip_norm=clip,
            steps=steps,
            lr=_lr_of(result),
            delta=delta,
            rng_source=rng_source,
            canaries=canaries,
            base_data=base_data,
            model_factory=model_factory or _production_model(result),
        )
        if audit.verdict == stats.VIOLATION:
            findings.append(
                f"canary audit lower bound {audit.lower_bound:.3f} exceeds the theoretical "
                f"ε {accounting.format_epsilon(audit.theoretical_epsilon)}: the DP "
                "implementation or its accounting is broken"
            )
        findings += _noise_findings(audit.noise) + _mechanism_findings(audit)
        findings += _theory_findings(audit, ledger, clients)
        caveats += _canary_warnings(audit)
    scheme = result.get("scheme")
    return AuditReport(
        run_dir=str(run_dir),
        scheme=scheme if isinstance(scheme, str) else None,
        delta=clients[0].delta,
        accountant=str(guarantee["accountant"]),
        clients=clients,
        client_level=client_level,
        guarantee=guarantee,
        canary=audit,
        findings=findings,
        caveats=caveats,
        files=[],  # filled in by audit_run once the output directory is known
    )


# ----------------------------------------------------------------- writing


def write_report(report: AuditReport, out_dir: Path) -> list[Path]:
    """Write audit.json, audit.md and epsilon_over_rounds.png into ``out_dir``."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / AUDIT_JSON
        json_path.write_text(
            json.dumps(_jsonable(report.to_dict()), indent=2, allow_nan=False) + "\n",
            encoding="utf-8",
        )
        md_path = out_dir / AUDIT_MD
        md_path.write_text(render_markdown(report), encoding="utf-8")
        png_path = out_dir / AUDIT_PLOT
        plot_epsilon_over_rounds(report, png_path)
    except OSError as exc:
        raise RunDirectoryError(
            f"audit output directory must be writable; got {exc.strerror}"
        ) from exc
    return [json_path, md_path, png_path]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def plot_epsilon_over_rounds(report: AuditReport, path: Path) -> None:
    """Per-client cumulative ε after each round, with each distinct budget as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.2))
    try:
        for c in report.clients:
            if c.rounds:
                xs, ys = zip(*c.rounds, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=c.client)
        for budget in sorted(
            {c.budget_epsilon for c in report.clients if c.budget_epsilon is not None}
        ):
            ax.axhline(float(budget), color="black", linestyle="--", linewidth=1)
            ax.annotate(
                f"budget ε={budget:g}",
                (0.01, float(budget)),
                xycoords=("axes fraction", "data"),
                va="bottom",
                fontsize=8,
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("round")
        ax.set_ylabel(f"cumulative ε (δ={report.delta:g})")
        ax.set_title("Record-level ε spent per client (accountant of record)")
        ax.grid(alpha=0.3)
        if len(report.clients) <= 20:
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _floor(value: float | None) -> str:
    return "—" if value is None else f"{math.floor(value * 1000) / 1000:.3f}"


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _budget_rows(clients: list[ClientStatus]) -> list[list[str]]:
    return [
        [
            c.client,
            accounting.format_epsilon(c.epsilon_spent),  # every ε rounded up
            accounting.format_epsilon(c.epsilon_rdp),
            _fmt(c.budget_epsilon, "g"),
            _floor(c.remaining_epsilon),  # what is left rounds down
            str(c.rounds_trained),
            "—" if c.remaining_rounds is None else str(c.remaining_rounds),
        ]
        for c in clients
    ]


_BUDGET_HEADER = [
    "client",
    "ε spent (PLD)",
    "ε (RDP check)",
    "budget ε",
    "remaining ε",
    "rounds trained",
    "rounds left",
]


def _canary_rows(a: CanaryAudit) -> list[tuple[str, str]]:
    return [
        (
            "audited mechanism",
            f"client {a.audited_client}: σ={a.noise_multiplier:.4g}, "
            f"q={a.sample_rate:.4g}, C={a.clip_norm:g}, {a.steps} steps"
            + ("" if a.steps == a.steps_in_run else f" (of {a.steps_in_run}; capped)"),
        ),
        (
            "theoretical ε",
            f"{accounting.format_epsilon(a.theoretical_epsilon)} (δ={a.delta:g}, "
            "accountant of record)",
        ),
        (
            f"{1 - a.beta:.0%} lower bound",
            f"{a.lower_bound:.3f} ({a.correct}/{a.guesses} correct guesses, {a.canaries} canaries)",
        ),
        (
            "Gaussian-fit estimate",
            f"{a.gaussian_epsilon_estimate:.3f} (μ={a.gaussian_mu:.3f}; an estimate, not a bound)",
        ),
        ("verdict", a.verdict),
        ("bound ceiling", f"{a.ceiling:.3f} (all guesses right; larger ε cannot be certified)"),
        (
            "applied noise std",
            f"{a.noise.estimated_std:.4g} = {a.noise.ratio:.4f}× the claimed σ·C "
            f"(interval {a.noise.ratio_low:.4f}–{a.noise.ratio_high:.4f}, "
            f"{a.noise.samples} pure-noise samples)",
        ),
        ("noise-scale verdict", a.noise.verdict),
        ("trainer", a.trainer),
        (
            "noise per tensor",
            ", ".join(f"{n} {c.ratio:.3f}× ({c.verdict})" for n, c in a.tensor_noise.items()),
        ),
        (
            "sampling rate",
            f"{a.sampled_rows}/{a.row_trials} rows used vs q = {a.sample_rate:.4g} "
            f"(binomial p = {a.sampling_p_value:.2g})",
        ),
        (
            "clipping",
            f"z = {a.clip_z:+.2f} over {a.clip_samples} sampled canary-steps "
            f"(a no-clip bug would shift it by {_clip_power(a):.1f})",
        ),
        ("seconds", f"{a.seconds:.1f}"),
    ]


def _clip_power(audit: CanaryAudit) -> float:
    """The z shift a disabled clip would add: mean excess norm (in σC) × √K."""
    return audit.clip_excess * math.sqrt(audit.clip_samples)


def render_markdown(report: AuditReport) -> str:
    """The audit as Markdown (audit.md)."""
    g = report.guarantee
    lines = [f"# Privacy audit of `{report.run_dir}`", ""]
    lines += ["## Guarantee", "", g["statement"], ""]
    lines += [
        f"- **Unit of privacy:** {g['unit']}",
        f"- **Adjacency:** {g['adjacency']}",
        f"- **Sampling:** {g['sampling']}",
        f"- **Accountant:** {g['accountant']}; cross-check: {g['cross_check']}",
        f"- **δ:** {g['delta']:g}",
        f"- **Largest ε:** {accounting.format_epsilon(g['epsilon_max'])} — {g['strength']}",
        f"- **Checkpoints:** {g['checkpoints']}",
        f"- **Threat model:** {g['threat_model']}",
        "- **Not accounted:** " + "; ".join(g["not_accounted"]),
        "",
        "## Budget per client",
        "",
    ]
    lines += _md_table(_BUDGET_HEADER, _budget_rows(report.clients))
    lines += [
        "",
        "Rounds left: further rounds the remaining budget affords at the client's "
        "own last per-round cost.",
        "",
    ]
    if report.client_level:
        lines += ["## Client-level (distributed DP) ledger", ""]
        lines += _md_table(_BUDGET_HEADER, _budget_rows(report.client_level))
        lines += [""]
    lines += ["## Empirical canary audit", ""]
    if report.canary is None:
        lines += ["Not run.", ""]
    else:
        lines += _md_table(["", "value"], [list(r) for r in _canary_rows(report.canary)])
        lines += [
            "",
            f"Method: {report.canary.method}. The lower bound is valid with probability "
            f"{1 - report.canary.beta:.0%}; it can only exceed the theoretical ε if the "
            "implementation or the accounting is wrong (VIOLATION). It audits the client "
            "DP-SGD code path with the run's recorded parameters, not the released model itself.",
            "",
        ]
    lines += ["## Findings", ""]
    lines += [f"- {f}" for f in report.findings] or [
        "None: every check passed."
        if report.passed
        else "None, but the audit is incomplete: no check that could fail at this ε "
        "(the applied noise scale) ran."
    ]
    if report.caveats:
        lines += ["", "## Caveats", ""] + [f"- {c}" for c in report.caveats]
    lines += ["", f"![ε over rounds]({AUDIT_PLOT})", ""]
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def render_console(report: AuditReport) -> Any:
    """Rich renderables for the terminal: budget table, guarantee, canary audit, findings."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    budget = Table(title="Privacy budget per client", title_justify="left")
    for i, name in enumerate(_BUDGET_HEADER):
        budget.add_column(name, justify="left" if i == 0 else "right")
    for row in _budget_rows(report.clients):
        budget.add_row(*row)
    parts: list[Any] = [budget, Panel(report.guarantee["statement"], title="Guarantee")]
    if report.canary is not None:
        table = Table(
            title="Empirical canary audit (one run)", title_justify="left", show_header=False
        )
        table.add_column("what")
        table.add_column("value")
        for key, value in _canary_rows(report.canary):
            style = ""
            if key == "verdict":
                style = "bold green" if value == stats.CONSISTENT else "bold red"
            table.add_row(key, value, style=style)
        parts.append(table)
    if report.findings:
        parts.append(Panel("\n".join(report.findings), title="Findings", border_style="red"))
    if report.caveats:
        parts.append(Panel("\n".join(report.caveats), title="Caveats", border_style="yellow"))
    return Group(*parts)


def print_report(report: AuditReport, console: Any | None = None) -> None:
    """Print :func:`render_console` output (to ``console`` or a new rich Console)."""
    from rich.console import Console

    (console or Console()).print(render_console(report))
