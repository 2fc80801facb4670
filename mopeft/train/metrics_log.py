"""The live training log: ``metrics.csv`` beside a unit's resume file and model, one row per step.

Why a second log next to ``train_log.json``: that file is written once, at the end, so a run of
hours says nothing until it finishes (or dies). ``metrics.csv`` grows as training goes: the loop
hands over the rows of each log interval (``TrainSettings.log_every``, when it reads the losses back
anyway) and they are appended and flushed at once, so ``tail -f`` or a reader during the run sees
them. Appending, not an atomic rewrite, is deliberate: a rewrite per interval would cost O(steps²)
and a reader never sees a half file any more than a half line matters to it (it skips a torn last
line; :func:`read_metrics`).

Resume keeps the file consistent with the weights: at a resume from step ``s`` the rows of steps
after ``s`` (written by the killed run after its last save) are dropped in one atomic rewrite, and
appending goes on from there, so every step has exactly one row; a fresh start truncates the file.

TensorBoard is optional (``training.log.tensorboard``, the ``tensorboard`` extra): the same rows also
go to event files in ``tensorboard/`` beside the CSV, which stays the record the report reads. At a
resume TensorBoard's own ``purge_step`` drops the events after the resumed step, as the CSV does.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from mopeft.errors import InputError
from mopeft.io import atomic_path

METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
COLUMNS = ("step", "loss", "lr", "grad_norm", "images_per_s", "data_wait_s", "gpu_mem_mb")
_HEADER = ",".join(COLUMNS) + "\n"


def _cell(value: Any) -> str:
    """One CSV field: empty for None (a value not measured on this row, e.g. no GPU), else repr-exact
    floats (``repr`` round-trips, so the curves read back the very losses the loop saw)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse(row: Mapping[str, str]) -> dict[str, float | int | None] | None:
    """A row as numbers (empty fields: None), or None if it is torn or malformed."""
    try:
        out: dict[str, float | int | None] = {"step": int(row["step"])}
        for key in COLUMNS[1:]:
            text = row.get(key)
            if text is None:
                return None  # a torn last line: fewer fields than the header
            out[key] = float(text) if text != "" else None
    except (TypeError, ValueError, KeyError):
        return None
    return out


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, float | int | None]]:
    """The rows of a ``metrics.csv`` (a file of another format or a torn line is skipped, not an
    error: the file may be read while a run appends to it)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            return []
        return [r for r in map(_parse, reader) if r is not None]


def tensorboard_writer(log_dir: Path, resumed_step: int) -> Any:
    """A ``SummaryWriter`` for ``log_dir``: a fresh run (``resumed_step`` 0) removes the event files
    of an earlier run there; a resumed one purges the events after ``resumed_step``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError(
            "training.log.tensorboard is true but the tensorboard package is not installed: "
            "pip install 'mopeft[tensorboard]' (or set training.log.tensorboard: false)"
        ) from None
    if resumed_step == 0 and log_dir.is_dir():
        for old in log_dir.glob("events.out.tfevents.*"):
            old.unlink()
    return SummaryWriter(str(log_dir), purge_step=resumed_step + 1 if resumed_step > 0 else None)


class MetricsLog:
    """Appends rows to ``metrics.csv`` (and, given ``tensorboard_dir``, to TensorBoard event files);
    :meth:`start` truncates it (fresh) or trims it (resume)."""

    def __init__(
        self, path: str | os.PathLike[str], tensorboard_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.tensorboard_dir = None if tensorboard_dir is None else Path(tensorboard_dir)
        self._file: IO[str] | None = None
        self._writer: Any = None

    def start(self, resumed_step: int) -> None:
        """Open for appending: a fresh run (``resumed_step`` 0) starts an empty file; a resumed one
        keeps the rows up to ``resumed_step`` (atomically rewritten once) and continues after them."""
        kept: list[str] = []
        if resumed_step > 0 and self.path.exists():
            kept = [
                line
                for line, row in self._lines()
                if row is not None and 0 < int(row["step"] or 0) <= resumed_step  # type: ignore[arg-type]
            ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(_HEADER + "".join(kept))
        if self.tensorboard_dir is not None:
            self._writer = tensorboard_writer(self.tensorboard_dir, resumed_step)
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 - held open for the run

    def _lines(self) -> Iterable[tuple[str, dict[str, float | int | None] | None]]:
        """Each data line of the current file with its parsed row (None: torn, malformed)."""
        with open(self.path, newline="") as f:
            header = f.readline()
            if header != _HEADER:
                return  # another format: nothing worth keeping
            for line in f:
                if not line.endswith("\n"):
                    continue  # torn by a kill mid-write
                fields = next(csv.reader([line]), [])
                yield line, _parse(dict(zip(COLUMNS, fields, strict=False)))  # short line: None

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append ``rows`` (dicts over :data:`COLUMNS`) and flush, so that readers see them now."""
        if self._file is None:
            raise RuntimeError("MetricsLog.append before start()")
        rows = list(rows)
        text = "".join(",".join(_cell(r.get(c)) for c in COLUMNS) + "\n" for r in rows)
        if text:
            self._file.write(text)
            self._file.flush()
        if self._writer is not None and rows:
            for row in rows:
                for key in COLUMNS[1:]:
                    if row.get(key) is not None:
                        self._writer.add_scalar(f"train/{key}", row[key], int(row["step"]))
            self._writer.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
