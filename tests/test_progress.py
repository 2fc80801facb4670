"""Progress in a log file is whole lines (time, count/total, rate, ETA), not tqdm's ``\\r`` redraws;
on a terminal it is still tqdm's bar."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from conftest import write_blocky_dataset
from tqdm import tqdm

from mopeft.data.sources import download
from mopeft.progress import LineProgress, progress

TINY = ["--arch", "tiny", "--batch-size", "2", "--lr", "1e-2", "--weight-decay", "0"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_stream_gets_whole_lines_at_the_interval_and_at_the_end():
    stream, clock = io.StringIO(), FakeClock()
    bar = progress(total=100, desc="train", unit="step", stream=stream, interval=30, clock=clock)
    assert isinstance(bar, LineProgress)
    for _ in range(100):
        clock.now += 1
        bar.update(1)
        bar.set_postfix(loss="0.5000", refresh=False)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 4  # at 30 s, 60 s, 90 s and the end
    for line, n, eta in zip(lines, (30, 60, 90, 100), ("1m10s", "40s", "10s", "0s"), strict=True):
        assert f"train: {n}/100 step ({n}%), 1 step/s" in line and f"ETA {eta}" in line
        assert line.split(" train:")[0].count(":") == 2  # starts with a time stamp
    assert "loss=0.5000" in lines[-1]


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MOPEFT_PROGRESS_SECONDS", "10")
    stream, clock = io.StringIO(), FakeClock()
    for _ in progress(range(50), desc="pretrain", stream=stream, clock=clock):
        clock.now += 1
    lines = stream.getvalue().splitlines()
    assert [line.split("pretrain: ")[1].split("/")[0] for line in lines] == ["10", "20", "30", "40", "50"]


def test_a_terminal_keeps_the_tqdm_bar():
    bar = progress(total=5, desc="train", stream=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()


class FakeResponse:
    status = 200

    def __init__(self, blocks: list[bytes]) -> None:
        self.blocks = blocks
        self.headers = {"Content-Length": str(sum(map(len, blocks)))}

    def read(self, n: int) -> bytes:
        return self.blocks.pop(0) if self.blocks else b""

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_a_download_shows_bytes_of_the_total_and_a_rate(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOPEFT_PROGRESS_SECONDS", "0")  # a line per block
    monkeypatch.setattr(download, "_open", lambda *a, **k: FakeResponse([b"x" * 1024] * 3))
    download.http_download("http://example.invalid/a.zip", tmp_path / "a.zip")
    lines = capsys.readouterr().err.splitlines()
    assert (tmp_path / "a.zip").stat().st_size == 3072
    assert [line.split("a.zip: ")[1].split(" (")[0] for line in lines] == [
        "1.0 KiB/3.0 KiB", "2.0 KiB/3.0 KiB", "3.0 KiB/3.0 KiB",
    ]  # fmt: skip
    assert all("B/s" in line and "ETA" in line for line in lines)


def test_training_progress_in_a_piped_stderr_has_no_carriage_returns(tmp_path):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    cmd = [sys.executable, "-m", "mopeft.cli", "train", "--data", str(ds), "--method", "lora"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOPEFT_PROGRESS_SECONDS": "0"}
    res = subprocess.run(
        [*cmd, "--steps", "3", *TINY, "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr
    assert "train: 3/3 step (100%)" in res.stderr and "ETA" in res.stderr
