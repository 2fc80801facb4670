"""One training job per unit (issue 19): while one `mopeft train` (an orphaned SLURM job, say) holds a
unit folder, a second one on it fails at once, naming the holder and how to stop it; once the
holder is gone, however it died, the unit trains again."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_blocky_dataset

import mopeft.commands.train as train_command
from mopeft.cli import main
from mopeft.train.lock import LOCK_NAME, UnitBusy, unit_lock
from mopeft.train.loop import train as real_train

FAST = ["--arch", "tiny", "--batch-size", "2", "--lr", "1e-2", "--weight-decay", "0"]
# A process that holds the unit's lock until killed (an orphaned job), and one that only tries it.
HOLD = """
import sys, time
from mopeft.train.lock import unit_lock
with unit_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""
TRY = """
import sys
from mopeft.train.lock import unit_lock
with unit_lock(sys.argv[1]):
    pass
"""


def _argv(ds: Path, out: Path) -> list[str]:
    return ["train", "--data", str(ds), "--method", "lora", "--steps", "2", *FAST, "--out", str(out)]


def _env(job: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    return env | ({"SLURM_JOB_ID": job} if job else {})


@pytest.mark.parametrize("job", ["4242", None])
def test_a_second_training_of_a_held_unit_fails_naming_the_holder(tmp_path, capsys, job):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    out = tmp_path / "cell"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], env=_env(job), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(_argv(ds, out)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert str(out) in err and f"pid {holder.pid}" in err and socket.gethostname() in err
        assert (f"SLURM job {job}" in err and f"scancel {job}" in err) if job else f"kill {holder.pid}" in err
        assert not (out / "model.safetensors").exists() and not (out / "train_state.pt").exists()
    finally:
        holder.kill()  # dies holding the lock: the kernel releases it
        holder.wait()
    assert main(_argv(ds, out)) == 0
    assert (out / "model.safetensors").exists()
    assert (out / LOCK_NAME).read_text() == ""  # released: no stale holder record


def test_mopeft_train_holds_the_lock_while_it_trains(tmp_path, monkeypatch):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    out = tmp_path / "cell"
    tries: list[subprocess.CompletedProcess] = []

    def on_step(step: int, loss: torch.Tensor) -> None:
        if step == 0:
            tries.append(
                subprocess.run(
                    [sys.executable, "-c", TRY, str(out)], capture_output=True, text=True, env=_env(None)
                )
            )

    monkeypatch.setattr(train_command, "train", lambda *a, **kw: real_train(*a, on_step=on_step, **kw))
    assert main(_argv(ds, out)) == 0
    (other,) = tries
    assert other.returncode != 0 and "UnitBusy" in other.stderr and f"pid {os.getpid()}" in other.stderr


def test_the_lock_is_exclusive_and_reentrant_after_release(tmp_path):
    with unit_lock(tmp_path / "unit"):
        tried = subprocess.run(
            [sys.executable, "-c", TRY, str(tmp_path / "unit")], capture_output=True, text=True
        )
        assert tried.returncode != 0 and "another training of this unit is running" in tried.stderr
    with unit_lock(tmp_path / "unit"):  # released at the end of the block
        pass


def test_a_file_system_without_locks_warns_and_trains(tmp_path, monkeypatch, caplog):
    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING), unit_lock(tmp_path / "unit"):
        pass
    assert "flock" in caplog.text and "make sure no other job trains this unit" in caplog.text


def test_unit_busy_is_a_value_error_for_the_cli():
    assert issubclass(UnitBusy, ValueError)
