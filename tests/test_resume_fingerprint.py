"""Resume only the same run (issue 19): a resume file from a run on other data, other base weights,
another init seed or other settings is moved aside and training starts over; an unreadable one is
moved aside too, instead of killing every retry. Through `mopeft train`, killed mid-run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_blocky_dataset
from PIL import Image

import mopeft.commands.train as train_command
from mopeft.cli import main
from mopeft.data.images import save_label
from mopeft.io import sha256_file
from mopeft.model.weights import TINY_ASSET, TINY_SHA256
from mopeft.train.loop import train as real_train
from mopeft.train.resume import differences

FAST = ["--arch", "tiny", "--batch-size", "2", "--lr", "1e-2", "--weight-decay", "0"]
STEPS = 6


class Killed(Exception):
    """Stands for the job being killed (SIGKILL, time limit) right after a step."""


def _argv(ds: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(ds), "--method", "lora", "--steps", str(STEPS), "--checkpoint-every", "2",
        *FAST, *extra, "--out", str(out),
    ]  # fmt: skip


def _train(monkeypatch: pytest.MonkeyPatch, argv: list[str], kill_at: int | None = None) -> list[int]:
    """Run `mopeft train`; return the step indices it ran. ``kill_at``: die after that step."""
    steps: list[int] = []

    def on_step(step: int, loss: torch.Tensor) -> None:
        steps.append(step)
        if step == kill_at:
            raise Killed

    monkeypatch.setattr(train_command, "train", lambda *a, **kw: real_train(*a, on_step=on_step, **kw))
    if kill_at is None:
        assert main(argv) == 0
    else:
        with pytest.raises(Killed):
            main(argv)
    return steps


def _invert_labels(ds: Path, num_classes: int = 3) -> None:
    """Every training label's classes reversed, in place: same names, same meta.json."""
    for path in sorted((ds / "train" / "labels").glob("*.png")):
        label = np.asarray(Image.open(path))
        inverted = np.where(label < num_classes, num_classes - 1 - label, label).astype(np.uint8)
        save_label(path, inverted, num_classes)


def _stale(out: Path) -> list[Path]:
    return sorted(out.glob("train_state.pt.stale-*"))


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_the_same_run_resumes_where_it_was_killed(tmp_path, monkeypatch, caplog):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=4, n_test=1)
    out = tmp_path / "cell"
    _train(monkeypatch, _argv(ds, out), kill_at=2)  # resume file written after step index 1 (2 done)
    with caplog.at_level(logging.INFO):
        assert _train(monkeypatch, _argv(ds, out))[0] == 2
    assert "resuming from" in caplog.text and not _stale(out)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("labels", "data.sha256"),
        ("init_seed", "model.init_seed"),
        ("weights", "model.weights_sha256"),
        ("seed", "settings.seed"),
    ],
)
def test_a_resume_file_of_another_run_is_moved_aside_naming_what_changed(
    tmp_path, monkeypatch, caplog, change, field
):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=4, n_test=1)
    out = tmp_path / "cell"
    _train(monkeypatch, _argv(ds, out), kill_at=2)
    state = out / "train_state.pt"
    before = sha256_file(state)
    extra: list[str] = []
    if change == "labels":
        _invert_labels(ds)
    elif change == "init_seed":
        extra = ["--init-seed", "1"]
    elif change == "weights":
        extra = ["--checkpoint", str(TINY_ASSET), "--checkpoint-sha256", TINY_SHA256]
    else:
        extra = ["--seed", "1"]
    with caplog.at_level(logging.INFO):
        steps = _train(monkeypatch, _argv(ds, out, *extra))
    assert steps == list(range(STEPS))  # started over
    assert "resuming from" not in caplog.text
    warned = _warnings(caplog)
    assert str(state) in warned and "different run" in warned and field in warned, warned
    (stale,) = _stale(out)
    assert sha256_file(stale) == before  # moved aside, not deleted
    assert not state.exists() and (out / "model.safetensors").exists()
    if change == "labels":
        # Started over for real: the same bytes as a run that only ever saw the inverted labels.
        _train(monkeypatch, _argv(ds, tmp_path / "fresh"))
        assert sha256_file(out / "model.safetensors") == sha256_file(tmp_path / "fresh" / "model.safetensors")


def _hostile(path: Path) -> None:
    class Hostile:
        def __reduce__(self):  # unpickling would call print("pwned"): code, not tensors
            return (print, ("pwned",))

    torch.save({"step": 2, "trainable": Hostile()}, path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "hostile", "older"])
def test_an_unreadable_resume_file_is_moved_aside_and_training_starts_over(
    tmp_path, monkeypatch, caplog, capsys, damage
):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=4, n_test=1)
    out = tmp_path / "cell"
    _train(monkeypatch, _argv(ds, out), kill_at=2)
    state = out / "train_state.pt"
    if damage == "truncated":  # a full disk or a killed copy: today `OSError: [Errno 22]` or a zip error
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "empty":
        state.write_bytes(b"")
    elif damage == "hostile":
        _hostile(state)
    else:  # written before the fingerprint's parts were recorded: cannot tell which run it was
        old = torch.load(state, weights_only=True)
        del old["fingerprint_parts"]
        torch.save(old, state)
    with caplog.at_level(logging.INFO):
        assert _train(monkeypatch, _argv(ds, out)) == list(range(STEPS))
    warned = _warnings(caplog)
    assert str(state) in warned and "training starts over" in warned, warned
    assert "weights_only" not in warned and "pwned" not in capsys.readouterr().out
    assert len(_stale(out)) == 1 and (out / "model.safetensors").exists()


def test_a_resume_file_whose_tensors_do_not_fit_leaves_the_model_untouched(tmp_path, monkeypatch, caplog):
    """Right fingerprint, wrong content (a tensor missing): moved aside, and the run is exactly a
    fresh one: no tensor loaded before the failure survives into the training."""
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=4, n_test=1)
    out = tmp_path / "cell"
    _train(monkeypatch, _argv(ds, out), kill_at=2)
    state = out / "train_state.pt"
    payload = torch.load(state, weights_only=True)
    for value in payload["trainable"].values():
        value.add_(1.0)  # loaded first; must not stay in the model
    payload["optimizer"]["param_groups"][0]["params"].append(999)  # the optimiser refuses this
    torch.save(payload, state)
    with caplog.at_level(logging.WARNING):
        assert _train(monkeypatch, _argv(ds, out)) == list(range(STEPS))
    assert "do not fit this run" in _warnings(caplog) and len(_stale(out)) == 1
    _train(monkeypatch, _argv(ds, tmp_path / "fresh"))
    assert sha256_file(out / "model.safetensors") == sha256_file(tmp_path / "fresh" / "model.safetensors")


def test_differences_name_the_changed_fields_with_short_digests():
    old = {"settings": {"lr": 0.001, "seed": 0}, "data": {"pairs": 4, "sha256": "a" * 64}, "model": None}
    new = {"settings": {"lr": 0.001, "seed": 1}, "data": {"pairs": 4, "sha256": "b" * 64}, "model": {"x": 1}}
    assert differences(old, new) == [
        "data.sha256: aaaaaaaaaaaa… -> bbbbbbbbbbbb…",
        "model: null -> (none)",
        "model.x: (none) -> 1",
        "settings.seed: 0 -> 1",
    ]
