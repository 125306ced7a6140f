"""The ``secagg`` command line: ``secagg run`` (federated training over a secure sum).

Settings come from, in increasing priority: :class:`FederationConfig`'s defaults
(with :data:`DEFAULT_SCHEME`), a ``--config FILE.toml`` whose keys are the flag
names (``local-epochs = 3``; ``local_epochs`` is accepted too), and the flags.
Any bad setting ends the command with one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import torch
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from secagg.errors import SecAggError
from training.federation import Federation, FederationConfig, FederationResult, RoundRecord

# The scheme `secagg run` uses when none is given (DESIGN §6: threshold CKKS).
# "plain" here would make the default run the INSECURE reference.
DEFAULT_SCHEME = "ckks"
# Whether `secagg run` trains with DP-SGD unless told --no-dp.
DP_BY_DEFAULT = False

USAGE_ERROR = 2

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
    "graph": "graph",
    "dropout": "dropout",
    "epsilon": "epsilon",
    "delta": "delta",
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


def _d(field: str) -> str:
    """ " (default: X)." from FederationConfig, so --help never disagrees with the code."""
    return f" (default: {FederationConfig.__dataclass_fields__[field].default})."


@app.callback()
def main() -> None:
    """secagg: federated learning over secure aggregation."""


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
    fields: dict[str, Any] = {"scheme": DEFAULT_SCHEME}
    fields.update({CONFIG_KEYS[k]: v for k, v in merged.items() if k in CONFIG_KEYS})
    no_dp = bool(merged.get("no-dp", False))
    fields["dp"] = not no_dp and (merged.get("epsilon") is not None or DP_BY_DEFAULT)
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
        "up kB",
        "dn kB",
        "prot s",
        "agg s",
        "dec s",
        "sec",
    )
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for r in result.rounds:
        s = r.seconds
        table.add_row(
            f"{r.round}{'!' if r.aborted else ''}",
            f"{r.accuracy:.3f}",
            f"{r.loss:.3f}",
            f"{len(r.participants)}/{len(r.dropped)}",
            _kb(r.bytes_up_per_client),
            _kb(r.bytes_down_per_client),
            f"{s['protect']:.2f}",
            f"{s['aggregate']:.2f}",
            f"{s['decrypt']:.2f}",
            f"{s['total']:.2f}",
        )
    table.caption = "in/out: clients in the sum / dropped out; sec: round wall time; !: aborted"
    return table


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
    graph: str | None = typer.Option(None, help="Masking graph: full or sparse" + _d("graph")),
    dropout: float | None = typer.Option(
        None, help="Per-round client dropout probability" + _d("dropout")
    ),
    epsilon: float | None = typer.Option(None, help="DP-SGD target ε per client (turns DP on)."),
    delta: float | None = typer.Option(None, help="DP-SGD δ."),
    no_dp: bool | None = typer.Option(None, "--no-dp", help="Train without differential privacy."),
    seed: int | None = typer.Option(
        None, help="Simulation seed (data split, init, dropouts)" + _d("seed")
    ),
    out: Path | None = typer.Option(
        None, help="Run directory (default: runs/<UTC time>-<scheme>)."
    ),
    partition: str | None = typer.Option(None, help="iid or dirichlet" + _d("partition")),
    alpha: float | None = typer.Option(None, help="Dirichlet concentration" + _d("alpha")),
    local_epochs: int | None = typer.Option(
        None, help="Local epochs per round" + _d("local_epochs")
    ),
    lr: float | None = typer.Option(None, help="Local learning rate" + _d("lr")),
    batch_size: int | None = typer.Option(None, help="Local batch size" + _d("batch_size")),
    optimizer: str | None = typer.Option(None, help="sgd or adam" + _d("optimizer")),
    update_clip: float | None = typer.Option(
        None, help="L2 clip of each client's update" + _d("update_clip")
    ),
    model: str | None = typer.Option(None, help="Registered model name" + _d("model")),
    clients_per_round: int | None = typer.Option(
        None, help="Clients sampled per round (default: all)."
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
        "graph": graph,
        "dropout": dropout,
        "epsilon": epsilon,
        "delta": delta,
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
    from training.report import default_run_dir, prepare_run_dir, write_run_dir

    try:
        file_values = read_config_file(config) if config is not None else {}
        settings, out_dir = resolve_settings(file_values, flags)
        run_dir = prepare_run_dir(out_dir or default_run_dir(settings.scheme))
    except (ConfigError, SecAggError) as exc:
        raise _fail(str(exc)) from None
    try:
        federation = Federation(settings)  # validates data, partition, scheme, DP before any output
        result = _run_with_progress(console, federation)
    except SecAggError as exc:
        _remove_if_empty(run_dir)
        raise _fail(str(exc)) from None
    write_run_dir(result, run_dir)
    console.print(summary_table(result))
    if result.setup is not None:
        console.print(
            f"key ceremony: {result.setup.bytes_total / 1000:.1f} kB in "
            f"{result.setup.messages} messages, {result.setup.seconds:.2f} s"
        )
    if result.scheme.get("insecure"):
        _warn_insecure(console, settings.scheme)
    console.print(
        f"privacy: {'DP-SGD' if result.privacy.get('enabled') else 'no differential privacy'}"
    )
    console.print(f"run directory: {run_dir}", markup=False)
    console.print(f"final accuracy: {result.final_accuracy:.4f}")


def _warn_insecure(console: Console, scheme: str) -> None:
    console.print(
        f"[bold red]INSECURE:[/] scheme '{scheme}' is the plaintext reference — the server "
        "sees every client's update in the clear."
    )


def _run_with_progress(console: Console, federation: Federation) -> FederationResult:
    settings = federation.config
    if federation.scheme.insecure:
        _warn_insecure(console, settings.scheme)
    with _progress(console, settings.rounds) as progress:
        task = progress.add_task("rounds", total=settings.rounds, status="")

        def on_round(record: RoundRecord) -> None:
            status = "aborted" if record.aborted else f"acc {record.accuracy:.3f}"
            progress.update(task, advance=1, status=status)

        return federation.run(on_round=on_round)


def _remove_if_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


__all__ = ["app", "DEFAULT_SCHEME", "DP_BY_DEFAULT", "resolve_settings", "read_config_file"]
