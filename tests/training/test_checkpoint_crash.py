"""The model file and the checkpoint naming it survive a kill between any two writes.

Threat: a crash (SIGKILL, power loss) between writing the new model and the checkpoint
left a checkpoint whose digest named a model that had been overwritten, and resume
refused the run. ``save_state`` writes the new model under a new name, then the
checkpoint, then ``model.pt``; here every file-system step is a possible kill point.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

import secagg_training.checkpoint as checkpoint_module
from secagg_training.checkpoint import (
    MODEL_FILE,
    Checkpoint,
    load_checkpoint,
    load_model,
    save_state,
)


class Kill(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def _model(value):
    model = nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def _state(round_number):
    rounds = [{"round": r} for r in range(1, round_number + 1)]
    return Checkpoint({"seed": 1}, "in-process", 0.1, 2.0, rounds, "")


def _kill_at(monkeypatch, step):
    """Raise Kill instead of the ``step``-th file-system write (0-based)."""
    count = [0]

    def gate(real):
        def wrapped(*args, **kwargs):
            if count[0] == step:
                raise Kill
            count[0] += 1
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(checkpoint_module.torch, "save", gate(torch.save))
    monkeypatch.setattr(checkpoint_module.os, "replace", gate(checkpoint_module.os.replace))
    monkeypatch.setattr(checkpoint_module.os, "link", gate(checkpoint_module.os.link))
    monkeypatch.setattr(Path, "unlink", gate(Path.unlink))
    return count


def _loaded(run_dir):
    state = load_checkpoint(run_dir)
    model = _model(0.0)
    load_model(model, run_dir, state)
    return state.completed_round, float(model.weight[0, 0])


def test_a_kill_between_any_two_writes_leaves_a_resumable_pair(tmp_path):
    steps = 0
    while True:
        run_dir = tmp_path / f"kill-{steps}"
        run_dir.mkdir()
        save_state(_model(1.0), _state(1), run_dir)
        with pytest.MonkeyPatch.context() as monkeypatch:
            _kill_at(monkeypatch, steps)
            try:
                save_state(_model(2.0), _state(2), run_dir)
                killed = False
            except Kill:
                killed = True
        # the old pair or the new one, never a checkpoint without its model
        assert _loaded(run_dir) in [(1, 1.0), (2, 2.0)]
        if not killed:
            assert _loaded(run_dir) == (2, 2.0)
            break
        # the resumed run checkpoints again: one model file left, model.pt current
        save_state(_model(3.0), _state(3), run_dir)
        assert _loaded(run_dir) == (3, 3.0)
        assert len(list(run_dir.glob("model-*.pt"))) == 1
        saved = torch.load(run_dir / MODEL_FILE, weights_only=True)
        assert float(saved["weight"][0, 0]) == 3.0
        steps += 1
    assert steps >= 5  # torch.save, model rename, checkpoint rename, link, model.pt rename
