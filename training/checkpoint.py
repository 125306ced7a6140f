"""Checkpoints of a run in progress, and what ``secagg run --resume`` reads back.

A run directory being written holds, besides the ledger:

- ``model.pt``: the global model's ``state_dict`` after the last completed round
  (and after round 0, the initial model), replaced atomically after every round;
- ``model-<digest>.pt``: the same bytes under the name the checkpoint gives (what a
  resume loads: ``model.pt`` is only the name users expect);
- ``checkpoint.json``: the run's configuration, the engine, the round records so
  far, the name and digest of the model file, and ``open_round`` — the round (and
  its cohort) the server has started but not finished.

:func:`save_state` writes the pair crash-consistently: the new model file under a new
name, then the checkpoint naming it (atomic rename), then ``model.pt`` and the removal
of the old model file. A kill between any two steps leaves a checkpoint whose model
file exists and matches its digest.

Write order makes every crash point recoverable without running a round twice or
losing a ledger entry: ``open_round`` is written *before* any client trains (so
before the ledger can hold that round); the ledger entries follow; the checkpoint
with the completed round (and ``open_round`` cleared) is written last. A resumed run
that finds an open round therefore knows the ledger may already charge it; it
charges the round's cohort conservatively for any client still missing, records
the round as interrupted (its aggregate was lost) and goes on with the next one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secagg.errors import DecodeError, ParameterError

CHECKPOINT_FORMAT = "secagg-checkpoint/v1"
CHECKPOINT_FILE = "checkpoint.json"
MODEL_FILE = "model.pt"


@dataclasses.dataclass
class Checkpoint:
    """What a resumed run needs (all public: configuration, metrics, model digest)."""

    config: dict[str, Any]
    engine: str
    initial_accuracy: float
    initial_loss: float
    rounds: list[dict[str, Any]]
    model_sha256: str
    open_round: dict[str, Any] | None = None
    finished: bool = False
    stopped: dict[str, Any] | None = None
    model_file: str = MODEL_FILE  # the file resume loads (older checkpoints: model.pt)

    @property
    def completed_round(self) -> int:
        return int(self.rounds[-1]["round"]) if self.rounds else 0

    def to_json(self) -> str:
        body = {"format": CHECKPOINT_FORMAT, **dataclasses.asdict(self)}
        return json.dumps(body, indent=1, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        try:
            data = json.loads(text)
            if data.pop("format") != CHECKPOINT_FORMAT:
                raise ValueError("format")
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise DecodeError(f"checkpoint must be a {CHECKPOINT_FORMAT} file") from None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write-then-rename with fsync: a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(run_dir: Path) -> None:
    """Make the renames in ``run_dir`` durable (a rename is in the directory's data)."""
    handle = os.open(run_dir, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _save_model(model: nn.Module, run_dir: Path) -> tuple[str, str]:
    """Write the ``state_dict`` as ``model-<digest>.pt`` (a new name: the file the
    current checkpoint names is never overwritten); returns (name, SHA-256)."""
    tmp = run_dir / (MODEL_FILE + ".tmp")
    torch.save(model.state_dict(), tmp)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
        digest = hashlib.sha256(handle.read()).hexdigest()
    name = f"model-{digest[:16]}.pt"
    os.replace(tmp, run_dir / name)
    return name, digest


def save_state(model: nn.Module, checkpoint: Checkpoint, run_dir: Path) -> None:
    """The model and the checkpoint naming it, crash-consistently (see the module doc)."""
    checkpoint.model_file, checkpoint.model_sha256 = _save_model(model, run_dir)
    _fsync_dir(run_dir)
    _atomic_write(run_dir / CHECKPOINT_FILE, checkpoint.to_json().encode())
    _fsync_dir(run_dir)
    tmp = run_dir / (MODEL_FILE + ".link")
    tmp.unlink(missing_ok=True)
    os.link(run_dir / checkpoint.model_file, tmp)
    os.replace(tmp, run_dir / MODEL_FILE)
    for stale in run_dir.glob("model-*.pt"):  # the previous one, or a crash's orphan
        if stale.name != checkpoint.model_file:
            stale.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> Checkpoint:
    path = Path(run_dir) / CHECKPOINT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise ParameterError(
            f"resume must name a run directory with {CHECKPOINT_FILE}; got {str(run_dir)!r}"
        ) from None
    return Checkpoint.from_json(text)


def load_model(model: nn.Module, run_dir: Path, checkpoint: Checkpoint) -> None:
    """Load the checkpoint's model file into ``model``; refuses one that does not match."""
    name = Path(checkpoint.model_file).name  # never a path out of the run directory
    path = Path(run_dir) / name
    try:
        raw = path.read_bytes()
    except OSError:
        raise ParameterError(f"resume needs {name} in {str(run_dir)!r}") from None
    if hashlib.sha256(raw).hexdigest() != checkpoint.model_sha256:
        raise DecodeError(f"{name} must match the checkpoint's digest; it does not")
    state = torch.load(path, weights_only=True)  # tensors only: no pickle code execution
    model.load_state_dict(state)
