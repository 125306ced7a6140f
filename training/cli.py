"""The ``secagg`` command line: ``run`` (federated training), ``audit``, ``bench``.

Settings of ``secagg run`` come from, in increasing priority:
:class:`FederationConfig`'s defaults (the same as the Python API's: threshold CKKS,
DP-SGD on, and under DP :data:`~secagg_training.privacy_plan.DP_TRAINING_DEFAULTS` for the
local-training settings not given), a ``--config FILE.toml`` whose keys are the flag
names (``local-epochs = 3``; ``local_epochs`` is accepted too), and the flags.
Any bad setting ends the command with one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import logging
import sqlite3
import tomllib
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from secagg.errors import ParameterError, SecAggError
from secagg_privacy.accounting import format_epsilon
from secagg_privacy.errors import PrivacyError
from secagg_training.config import DEFAULT_SCHEME, PLAIN_TRAINING_DEFAULTS
from secagg_training.federation import (
    Federation,
    FederationConfig,
    FederationResult,
    RoundRecord,
    UtilityWarning,
)
from secagg_training.models import available_models
from secagg_training.privacy_plan import DEFAULT_DELTA, DEFAULT_EPSILON, DP_TRAINING_DEFAULTS

# Whether `secagg run` trains with DP-SGD unless told --no-dp (the API's default too).
DP_BY_DEFAULT: bool = FederationConfig.__dataclass_fields__["dp"].default  # type: ignore[assignment]

USAGE_ERROR = 2
# The run finished but released no model (every round aborted or was refused).
NO_MODEL = 1

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="secagg: federated learning over secure aggregation (threshold CKKS, pairwise masking).",
)

# flag name (= TOML key) → FederationConfig field; "no-dp" and "out" are handled apart.
CONFIG_KEYS: dict[str, str] = {
    "scheme": "scheme",
    "clients": "clients",
    "rounds": "rounds",
    "committee": "committee",
    "threshold": "threshold",
    "corrupt-holders": "corrupt_holders",
    "graph": "graph",
    "dropout": "dropout",
    "epsilon": "epsilon",
    "delta": "delta",
    "budget": "budget",
    "noise-multiplier": "noise_multiplier",
    "max-grad-norm": "max_grad_norm",
    "dp-unit": "dp_unit",
    "min-honest": "min_honest",
    "colluders": "colluders",
    "nominal-records": "nominal_records",
    "seed": "seed",
    "partition": "partition",
    "alpha": "alpha",
    "local-epochs": "local_epochs",
    "lr": "lr",
    "batch-size": "batch_size",
    "optimizer": "optimizer",
    "update-clip": "update_clip",
    "model": "model",
    "clients-per-round": "clients_per_round",
}
FILE_ONLY_KEYS = ("no-dp", "out")
DP_KEYS = (
    "epsilon",
    "delta",
    "budget",
    "noise-multiplier",
    "max-grad-norm",
    "dp-unit",
    "min-honest",
    "colluders",
    "nominal-records",
)


def _d(field: str) -> str:
    """ " (default: X)." from FederationConfig, so --help never disagrees with the code."""
    return f" (default: {FederationConfig.__dataclass_fields__[field].default})."


def _dp_d(field: str) -> str:
    """ " (default: X with DP, Y without)." for the settings DP-SGD tunes differently."""
    plain = PLAIN_TRAINING_DEFAULTS[field]
    return f" (default: {DP_TRAINING_DEFAULTS[field]} with DP, {plain} without)."


def _version(value: bool) -> None:
    if value:
        typer.echo(f"secagg {metadata.version('secagg')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """secagg: federated learning over secure aggregation."""
    # dp-accounting's RDP cross-check logs (via absl) every Rényi order it drops
    # for numerical reasons; the bound stays valid, and the lines drown the output.
    logging.getLogger("absl").setLevel(logging.ERROR)


class ConfigError(Exception):
    """A setting from the command line or the config file is unusable."""


def read_config_file(path: Path) -> dict[str, Any]:
    """TOML keys (flag names; ``_`` accepted for ``-``) → their values, unknown keys refused."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config must be an existing file; got {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config must be a readable UTF-8 file; got {str(path)!r} ({exc})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config must be valid TOML; {str(path)!r}: {exc}") from None
    known = (*CONFIG_KEYS, *FILE_ONLY_KEYS)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        flag = key.replace("_", "-")
        if flag not in known:
            raise ConfigError(
                f"config key must be one of {', '.join(known)}; got {key!r} in {str(path)!r}"
            )
        if isinstance(value, dict | list):
            raise ConfigError(
                f"config key {key!r} must be a single value; got a {type(value).__name__}"
            )
        values[flag] = value
    if "no-dp" in values and not isinstance(values["no-dp"], bool):
        raise ConfigError(f"config key 'no-dp' must be true or false; got {values['no-dp']!r}")
    if "out" in values and not isinstance(values["out"], str):
        raise ConfigError(f"config key 'out' must be a path string; got {values['out']!r}")
    return values


def resolve_settings(
    file_values: dict[str, Any], flags: dict[str, Any]
) -> tuple[FederationConfig, Path | None]:
    """Defaults ← config file ← flags; returns the validated config and the ``out`` path."""
    merged = dict(file_values)
    merged.update({k: v for k, v in flags.items() if v is not None})
    # FederationConfig's defaults are the CLI's (ckks, DP-SGD on): only given values pass
    fields: dict[str, Any] = {CONFIG_KEYS[k]: v for k, v in merged.items() if k in CONFIG_KEYS}
    no_dp = bool(merged.get("no-dp", False))
    if no_dp:
        given = [k for k in DP_KEYS if merged.get(k) is not None]
        if given:
            raise ConfigError(
                f"{given[0]} must not be set together with no-dp; got both "
                "(drop --no-dp to train with DP-SGD)"
            )
    fields["dp"] = not no_dp
    out = merged.get("out")
    return FederationConfig(**fields), Path(out) if out is not None else None


def _progress(console: Console, rounds: int) -> Progress:
    return Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _kb(value: float | None) -> str:
    return "—" if value is None else f"{value / 1000:.1f}"


def summary_table(result: FederationResult) -> Table:
    """One row per round; narrow enough for an 80-column terminal."""
    table = Table(title=f"secagg run — {result.config.scheme}", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = (
        "round",
        "acc",
        "loss",
        "in/out",
        "up/dn kB",
        "prot",
        "agg",
        "dec",
        "sec",
    )
    dp = bool(result.privacy.get("enabled"))
    for column in (*columns, "ε max") if dp else columns:
        table.add_column(column, justify="right", no_wrap=True)
    for r in result.rounds:
        s = r.seconds
        cells = [
            f"{r.round}{'!' if r.aborted else ''}",
            f"{r.accuracy:.3f}",
            f"{r.loss:.3f}",
            f"{len(r.participants)}/{len(r.dropped)}",
            f"{_kb(r.bytes_up_per_client)}/{_kb(r.bytes_down_per_client)}",
            f"{s['protect']:.2f}",
            f"{s['aggregate']:.2f}",
            f"{s['decrypt']:.2f}",
            f"{s['total']:.2f}",
        ]
        if dp:
            cells.append("—" if r.epsilon_max is None else format_epsilon(r.epsilon_max, 2))
        table.add_row(*cells)
    table.caption = (
        "in/out: clients in the sum / dropped out; prot/agg/dec: seconds protecting, "
        "aggregating, decrypting; sec: round wall time; !: aborted"
    )
    if dp:
        table.caption += "; ε max: largest cumulative ε of any client after the round"
    return table


def privacy_table(result: FederationResult) -> Table:
    """Per client: records, q, σ, steps run, ε (accountant of record), RDP check, budget."""
    p = result.privacy
    if p.get("kind") == "client-level":
        return _client_level_table(result)
    table = Table(
        title=f"privacy per client (record-level DP-SGD, δ={p['delta']:g})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("client", "q", "σ", "steps", "ε (PLD)", "ε (RDP)", "budget"):
        table.add_column(column, justify="left" if column == "client" else "right", no_wrap=True)
    rdp = p["cross_check"]["epsilon_per_client"]
    for client, eps in p["epsilon_per_client"].items():
        table.add_row(
            client,
            f"{p['sample_rate'][client]:.3f}",
            f"{p['noise_multiplier'][client]:.3f}",
            str(p["steps"]["run"][client]),
            format_epsilon(eps),
            format_epsilon(rdp[client]),
            f"{p['budget']:g}",
        )
    return table


def _client_level_table(result: FederationResult) -> Table:
    p = result.privacy
    table = Table(
        title=f"client-level DP per client (z={p['noise_multiplier']:.3f}, S={p['clip_norm']:g}, "
        f"min honest {p['min_honest']}, δ={p['delta']:g})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("client", "ε (PLD)", "budget"):
        table.add_column(column, justify="left" if column == "client" else "right", no_wrap=True)
    for client, eps in p["epsilon_per_client"].items():
        table.add_row(client, format_epsilon(eps), f"{p['budget']:g}")
    return table


def privacy_line(result: FederationResult) -> str:
    """One line saying what the run's privacy guarantee is (or that there is none)."""
    p = result.privacy
    if not p.get("enabled"):
        return "privacy: no differential privacy (the model and aggregates carry no (ε, δ) bound)"
    ledger = p["ledger"]
    where = f"{ledger['path']} (temporary)" if ledger["temporary"] else ledger["path"]
    mechanism = "client-level distributed DP" if p.get("kind") == "client-level" else "DP-SGD"
    line = (
        f"privacy: {mechanism}, {p['guarantee']} (budget ε={p['budget']:g}; "
        f"{p['accountant']}); ledger {where}"
    )
    if p.get("kind") == "client-level":  # the honest-share assumption and zero-out beside
        line += (
            f"; {p['min_honest_derivation']}; zero-out (weaker adjacency): "
            f"ε ≤ {format_epsilon(p['epsilon_max'])}"
        )
    return line


def _fail(message: str) -> typer.Exit:
    """Print one ``error:`` line on stderr; the caller raises the returned exit (code 2)."""
    Console(stderr=True).print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code=USAGE_ERROR)


@app.command()
def run(
    config: Path | None = typer.Option(
        None, "--config", help="TOML file; keys are the flag names."
    ),
    scheme: str | None = typer.Option(
        None, help=f"plain, masking or ckks (default: {DEFAULT_SCHEME})."
    ),
    clients: int | None = typer.Option(None, help="Number of clients" + _d("clients")),
    rounds: int | None = typer.Option(None, help="Federated rounds" + _d("rounds")),
    committee: int | None = typer.Option(None, help="Key holders (CKKS)" + _d("committee")),
    threshold: int | None = typer.Option(
        None, help="Parties needed to finish a round (default: the scheme's)."
    ),
    corrupt_holders: int | None = typer.Option(
        None,
        help="CKKS key holders that may collude with a malicious server; the default "
        "threshold rises to ⌈(committee + c + 1)/2⌉ (e.g. 9 holders, c = 4 → 7-of-9)"
        + _d("corrupt_holders"),
    ),
    graph: str | None = typer.Option(None, help="Masking graph: full or sparse" + _d("graph")),
    dropout: float | None = typer.Option(
        None, help="Per-round client dropout probability" + _d("dropout")
    ),
    epsilon: float | None = typer.Option(
        None,
        help=f"DP-SGD target ε per client over the whole run (default: {DEFAULT_EPSILON:g}).",
    ),
    delta: float | None = typer.Option(None, help=f"DP-SGD δ (default: {DEFAULT_DELTA:g})."),
    budget: float | None = typer.Option(
        None, help="Ledger budget ε per client; rounds past it are refused (default: --epsilon)."
    ),
    noise_multiplier: float | None = typer.Option(
        None, help="Fixed DP-SGD noise multiplier σ instead of calibrating it to --epsilon."
    ),
    max_grad_norm: float | None = typer.Option(
        None, help="DP-SGD per-sample clipping norm" + _d("max_grad_norm")
    ),
    dp_unit: str | None = typer.Option(
        None,
        help="record: DP-SGD per client's records; client: distributed client-level DP over a "
        "secure scheme" + _d("dp_unit"),
    ),
    min_honest: int | None = typer.Option(
        None,
        help="Client-level DP: honest noise shares guaranteed in each sum "
        "(default: the scheme's guaranteed survivors minus --colluders).",
    ),
    colluders: int | None = typer.Option(
        None,
        help="Client-level DP: clients that may collude with the server (default: t − 1).",
    ),
    nominal_records: int | None = typer.Option(
        None,
        help="Record-level DP: declared public records per client N; fixes q = B/N and the "
        "steps (default for the built-in digits: its public train size // clients).",
    ),
    no_dp: bool | None = typer.Option(
        None, "--no-dp", help="Train without differential privacy (DP-SGD is on by default)."
    ),
    seed: int | None = typer.Option(
        None, help="Simulation seed (data split, init, dropouts)" + _d("seed")
    ),
    out: Path | None = typer.Option(
        None, help="Run directory (default: runs/<UTC time>-<scheme>)."
    ),
    partition: str | None = typer.Option(None, help="iid or dirichlet" + _d("partition")),
    alpha: float | None = typer.Option(None, help="Dirichlet concentration" + _d("alpha")),
    local_epochs: int | None = typer.Option(
        None, help="Local epochs per round" + _dp_d("local_epochs")
    ),
    lr: float | None = typer.Option(None, help="Local learning rate" + _dp_d("lr")),
    batch_size: int | None = typer.Option(
        None, help="Local (expected, under DP) batch size" + _dp_d("batch_size")
    ),
    optimizer: str | None = typer.Option(None, help="sgd or adam" + _d("optimizer")),
    update_clip: float | None = typer.Option(
        None, help="L2 clip of each client's update (S under --dp-unit client)" + _d("update_clip")
    ),
    model: str | None = typer.Option(
        None, help=f"Model: {', '.join(available_models())}" + _d("model")
    ),
    clients_per_round: int | None = typer.Option(
        None, help="Clients sampled per round (default: all)."
    ),
    engine: str = typer.Option(
        "in-process",
        help="in-process (one process, the simulation) or flower-local (a SuperLink and one "
        "SuperNode per party as local processes on 127.0.0.1).",
    ),
    resume: Path | None = typer.Option(
        None, help="Continue the run in this directory from its last completed round."
    ),
) -> None:
    """Train a federated model over secure aggregation and write a run directory."""
    console = Console(highlight=False)
    # The built-in models are tiny: one intra-op thread is fastest, and several
    # threads spin against each other badly on a loaded 2-core machine (10× slower).
    torch.set_num_threads(1)
    flags = {
        "scheme": scheme,
        "clients": clients,
        "rounds": rounds,
        "committee": committee,
        "threshold": threshold,
        "corrupt-holders": corrupt_holders,
        "graph": graph,
        "dropout": dropout,
        "epsilon": epsilon,
        "delta": delta,
        "budget": budget,
        "noise-multiplier": noise_multiplier,
        "max-grad-norm": max_grad_norm,
        "dp-unit": dp_unit,
        "min-honest": min_honest,
        "colluders": colluders,
        "nominal-records": nominal_records,
        "no-dp": no_dp,
        "seed": seed,
        "out": str(out) if out else None,
        "partition": partition,
        "alpha": alpha,
        "local-epochs": local_epochs,
        "lr": lr,
        "batch-size": batch_size,
        "optimizer": optimizer,
        "update-clip": update_clip,
        "model": model,
        "clients-per-round": clients_per_round,
    }
    from secagg_training.report import default_run_dir, prepare_run_dir, write_run_dir

    try:
        if resume is not None:
            settings, run_dir, engine = _resume_settings(resume, flags, config)
        else:
            if engine not in ENGINES:
                raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
            file_values = read_config_file(config) if config is not None else {}
            settings, out_dir = resolve_settings(file_values, flags)
            run_dir = prepare_run_dir(out_dir or default_run_dir(settings.scheme))
    except (ConfigError, SecAggError) as exc:
        raise _fail(str(exc)) from None
    if engine != "in-process":
        _run_flower(console, settings, run_dir, resume=resume is not None)
        return
    try:
        with warnings.catch_warnings():
            # printed as one `warning:` line each instead of Python's two-line form
            warnings.simplefilter("ignore", UtilityWarning)
            # validates data, partition, scheme and DP (calibration) before any output
            federation = Federation(
                settings, ledger_path=run_dir / "ledger", resume=resume is not None
            )
            for message in federation.warnings:
                _warn(message)
            result = _run_with_progress(console, federation, run_dir)
        write_run_dir(result, run_dir)
    except (SecAggError, PrivacyError) as exc:
        _remove_if_empty(run_dir)
        raise _fail(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        # e.g. the run directory turned read-only or the disk filled up mid-run
        raise _fail(
            f"out must stay a writable directory during the run; got {str(run_dir)!r} "
            f"({type(exc).__name__}: {exc})"
        ) from None
    console.print(summary_table(result))
    if result.privacy.get("enabled"):
        console.print(privacy_table(result))
    if result.setup is not None:
        console.print(
            f"CRS ceremony: {result.setup.bytes_total / 1000:.1f} kB in "
            f"{result.setup.messages} messages, {result.setup.seconds:.2f} s"
        )
    if result.scheme.get("insecure"):
        _warn_insecure(console, settings.scheme)
    console.print(privacy_line(result), markup=False)
    if result.stopped is not None:
        console.print(
            f"[bold yellow]stopped:[/] privacy budget exhausted before round "
            f"{result.stopped['round']} of {settings.rounds}: no client could afford it "
            f"(budget ε={result.privacy.get('budget'):g})"
        )
    console.print(f"run directory: {run_dir}", markup=False)
    console.print(f"final accuracy: {result.final_accuracy:.4f}")
    if result.produced_model:
        for message in result.warnings[len(federation.warnings) :]:
            _warn(message)
    else:  # the one error line below says it
        raise _fail_run(
            f"no round produced a model ({len(result.rounds)} of {settings.rounds} rounds ran; "
            "see the round errors in result.json)"
        )


def _warn(message: str) -> None:
    Console(stderr=True).print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


def _fail_run(message: str) -> typer.Exit:
    """The run finished but produced nothing usable: one ``error:`` line, exit 1."""
    Console(stderr=True).print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code=NO_MODEL)


ENGINES = ("in-process", "flower-local")


def _resume_settings(
    run_dir: Path, flags: dict[str, Any], config: Path | None
) -> tuple[FederationConfig, Path, str]:
    """The configuration and engine a checkpointed run directory was started with."""
    from secagg_training.checkpoint import load_checkpoint

    given = [k for k, v in flags.items() if v is not None]
    if given or config is not None:
        raise ConfigError(
            f"resume must not be combined with settings (the checkpoint fixes them); "
            f"got --{(given or ['config'])[0]}"
        )
    checkpoint = load_checkpoint(run_dir)
    engine = "flower-local" if checkpoint.engine == "flower" else checkpoint.engine
    try:
        settings = FederationConfig(**checkpoint.config)
    except TypeError:
        raise ConfigError("resume checkpoint must hold a valid configuration") from None
    return settings, run_dir, engine


def _run_flower(
    console: Console, settings: FederationConfig, run_dir: Path, *, resume: bool
) -> None:
    """Run (or resume) the federation on a local Flower deployment and print its summary."""
    from secagg_training.flower.local import FlowerLocalError, run_flower_local

    try:
        document = run_flower_local(settings, run_dir, resume=resume, log=console.print)
    except (SecAggError, PrivacyError, FlowerLocalError) as exc:
        raise _fail(str(exc)) from None
    for r in document["rounds"]:
        status = "aborted" if r["aborted"] else f"acc {r['accuracy']:.3f}"
        console.print(
            f"round {r['round']}: {status}, {len(r['participants'])} in the sum, "
            f"{len(r['dropped'])} dropped, {r['seconds']['total']:.1f} s",
            markup=False,
        )
    if document.get("insecure"):
        _warn_insecure(console, settings.scheme)
    console.print(f"run directory: {run_dir}", markup=False)
    console.print(f"final accuracy: {document['final_accuracy']:.4f}")


def _warn_insecure(console: Console, scheme: str) -> None:
    console.print(
        f"[bold red]INSECURE:[/] scheme '{scheme}' is the plaintext reference — the server "
        "sees every client's update in the clear."
    )


def _run_with_progress(
    console: Console, federation: Federation, run_dir: Path
) -> FederationResult:
    settings = federation.config
    if federation.scheme.insecure:
        _warn_insecure(console, settings.scheme)
    if not console.is_terminal:
        return federation.run(
            on_round=lambda record: _round_line(console, record, settings.rounds), run_dir=run_dir
        )
    with _progress(console, settings.rounds) as progress:
        task = progress.add_task("rounds", total=settings.rounds, status="")

        def on_round(record: RoundRecord) -> None:
            status = "aborted" if record.aborted else f"acc {record.accuracy:.3f}"
            if record.epsilon_max is not None:
                status += f"  ε max {format_epsilon(record.epsilon_max, 2)}"
            if record.refused_budget:
                status += f"  {len(record.refused_budget)} over budget"
            progress.update(task, advance=1, status=status)

        return federation.run(on_round=on_round, run_dir=run_dir)


def _round_line(console: Console, record: RoundRecord, rounds: int) -> None:
    """One flushed line per finished round, for output redirected to a file or a pipe."""
    status = f"aborted ({record.error})" if record.aborted else f"accuracy {record.accuracy:.4f}"
    line = (
        f"round {record.round}/{rounds}: {status}, {len(record.participants)} in the sum, "
        f"{len(record.dropped)} dropped, {record.seconds['total']:.2f} s"
    )
    if record.epsilon_max is not None:
        line += f", ε max {format_epsilon(record.epsilon_max)}"  # rounded up, never down
    if record.refused_budget:
        line += f", {len(record.refused_budget)} over budget"
    console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.file.flush()


@app.command()
def audit(
    run_dir: Path = typer.Argument(..., help="A run directory written by `secagg run`."),
    out: Path | None = typer.Option(
        None, help="Where to write audit.json, audit.md and the plot (default: RUN_DIR)."
    ),
    canary: bool = typer.Option(
        True, "--canary/--no-canary", help="Run the empirical one-run canary audit."
    ),
) -> None:
    """Audit a finished run's privacy budget: ε per client, guarantee, canary lower bound.

    Exit status 0 when the audit passes, 2 when it finds a problem (or cannot run).
    """
    from secagg_privacy.audit.report import audit_run, render_console

    torch.set_num_threads(1)
    console = Console(highlight=False)
    try:
        report = audit_run(run_dir, out_dir=out, canary=canary)
    except PrivacyError as exc:
        raise _fail(str(exc)) from None
    console.print(render_console(report))
    verdict = report.canary.verdict if report.canary is not None else "not run"
    noise = report.canary.noise.verdict if report.canary is not None else "not checked"
    status = {
        "passed": "passed",
        "FAILED": f"FAILED ({len(report.findings)} findings)",
        "incomplete": "incomplete (no check that could fail at this ε ran)",
    }[report.status]
    console.print(f"audit {status}; noise scale: {noise}; canary bound: {verdict}", markup=False)
    written = Path(out) if out is not None else Path(run_dir)
    console.print(f"audit written to: {written}", markup=False)
    if report.status == "FAILED":
        raise typer.Exit(code=USAGE_ERROR)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="The smoke-test grid (about 2 minutes)."),
    out: Path = typer.Option(Path("runs/bench"), help="Output directory for the results."),
    grid: str | None = typer.Option(
        None,
        help="A preset (quick, standard, full; default: standard, or quick with --quick) or "
        "'preset;key=v1,v2;...' "
        "(keys: schemes, dims, clients, dropouts, cell_seconds, e2e, e2e_rounds, e2e_clients, "
        "seed).",
    ),
    plan: bool = typer.Option(
        False, "--plan", help="Only list the cells that would run or be skipped, and why."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    flower: bool = typer.Option(
        False,
        "--flower",
        help="Only the Flower comparisons: Flower's SecAgg+ on the same vectors, and the "
        "round overhead of flower-local vs in-process (a few minutes).",
    ),
) -> None:
    """Measure what secure aggregation costs over the plaintext sum (seconds and bytes)."""
    from secagg_benchmarks.harness import estimate_plan, plan_lines, run_benchmark
    from secagg_benchmarks.report import goal_status

    torch.set_num_threads(1)
    console = Console(highlight=False)
    if flower:
        from secagg_benchmarks.flower_overhead import run_flower_bench

        try:
            run_flower_bench(out)
        except SecAggError as exc:
            raise _fail(str(exc)) from None
        console.print((out / "flower.md").read_text(), markup=False)
        return
    try:
        if plan:
            for line in plan_lines(estimate_plan(grid, quick=quick)):
                console.print(line, markup=False, soft_wrap=True)
            return
        results = run_benchmark(quick=quick, out_dir=out, progress=not no_progress, grid=grid)
    except SecAggError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"benchmark results written to {out}: results.json, results.md and plots "
        f"({results['duration_seconds']:.0f} s)",
        markup=False,
    )
    for goal in results.get("goals", []):
        console.print(f"  {goal_status(goal):>12}  {goal['goal']}  {goal['target']}", markup=False)


keys_app = typer.Typer(
    no_args_is_help=True,
    help="Party keys: make a party's key file, assemble the public roster (run out of band).",
)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    party: str = typer.Option(..., help="The party id: client/<name> or holder/<name>."),
    out: Path = typer.Option(..., help="Directory for <party>.key (0600) and <party>.pub.json."),
) -> None:
    """Create one party's key file (on that party's machine) and export its public part."""
    import json

    from secagg.identity import PartyKeys
    from secagg.rand import SystemRng

    console = Console(highlight=False)
    try:
        keys = PartyKeys.generate(party, rng=SystemRng())
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        stem = party.replace("/", "_")
        public_path = out / f"{stem}.pub.json"
        if public_path.exists():
            raise ParameterError(f"public key file must not exist already; got {public_path}")
        key_path = keys.save(out / f"{stem}.key")
        public_path.write_text(json.dumps(keys.public.to_json(), indent=1) + "\n")
    except (SecAggError, OSError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"secret key file (keep it here, mode 0600): {key_path}", markup=False)
    console.print(f"public part (send it to whoever assembles the roster): {public_path}")
    console.print(f"fingerprint (compare it out of band): {keys.public.fingerprint}")


@keys_app.command("roster")
def keys_roster(
    public_files: list[Path] = typer.Argument(..., help="The parties' <party>.pub.json files."),
    out: Path = typer.Option(Path("roster.json"), help="The roster file to write."),
) -> None:
    """Assemble the out-of-band roster of public keys every party and the server load."""
    import json

    from secagg.errors import DecodeError
    from secagg.identity import PublicIdentity, Roster

    console = Console(highlight=False)
    try:
        identities = []
        for path in public_files:
            try:
                identities.append(PublicIdentity.from_json(json.loads(path.read_text())))
            except (OSError, ValueError) as exc:
                if isinstance(exc, DecodeError):
                    raise
                raise ParameterError(
                    f"public key file must be readable JSON; got {path}"
                ) from None
        roster = Roster(identities)
        roster.save(out)
    except SecAggError as exc:
        raise _fail(str(exc)) from None
    for party in roster:
        console.print(f"{party}  {roster[party].fingerprint}", markup=False)
    console.print(f"roster of {len(roster)} parties written to {out}", markup=False)
    console.print(f"roster digest: {roster.digest.hex()}")


def _remove_if_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


__all__ = ["app", "DEFAULT_SCHEME", "DP_BY_DEFAULT", "resolve_settings", "read_config_file"]
