"""The live metrics.csv of a training unit: written as training goes, trimmed at a resume, read by
the training-curves figure (mopeft.train.metrics_log, mopeft.train.loop, mopeft.report.curves)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import write_blocky_dataset
from test_report_tables import _cell

from mopeft.data.loading.loader import SegmentationPairs
from mopeft.data.prepared.units import load_unit
from mopeft.methods import METHODS
from mopeft.methods.checkpoint import build_from_config, model_config
from mopeft.report.curves import write_training_curves
from mopeft.train.loop import TrainSettings, train
from mopeft.train.metrics_log import COLUMNS, METRICS_FILE, MetricsLog, read_metrics

STEPS, LOG_EVERY = 7, 3


def _setup(tmp_path: Path) -> tuple[dict, SegmentationPairs, TrainSettings]:
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=4, n_test=1)
    unit = load_unit(ds, "main")
    cfg = model_config("tiny", unit.num_classes, "lora", METHODS["lora"].defaults, 96, None, None, 0)
    settings = TrainSettings(
        steps=STEPS,
        batch_size=2,
        lr=5e-3,
        weight_decay=0,
        checkpoint_every=4,
        log_every=LOG_EVERY,
        seed=1,
        device="cpu",
    )
    return cfg, SegmentationPairs(unit.train, 96), settings


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_training_writes_a_row_per_step_that_grows_during_the_run(tmp_path):
    cfg, data, settings = _setup(tmp_path)
    out = tmp_path / "unit"
    out.mkdir()
    seen: dict[int, list[int]] = {}

    def watch(step: int, loss: torch.Tensor) -> None:
        seen[step + 1] = [r["step"] for r in read_metrics(out / METRICS_FILE)]  # read mid-run

    result = train(build_from_config(cfg), data, settings, out / "train_state.pt", on_step=watch)
    # Rows reach disk at each log point (every LOG_EVERY steps, and at a save: step 4, and the end).
    flushed = {1: 0, 2: 0, 3: 3, 4: 4, 5: 4, 6: 6, 7: 7}
    assert {done: len(steps) for done, steps in seen.items()} == flushed
    assert all(steps == list(range(1, len(steps) + 1)) for steps in seen.values())

    path = out / METRICS_FILE
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    rows = _rows(path)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert [float(r["loss"]) for r in rows] == result.losses  # exactly the loop's losses
    assert all(float(r["lr"]) == settings.lr for r in rows)  # constant-lr Adam: the schedule is flat
    for r in rows:
        assert math.isfinite(float(r["grad_norm"])) and float(r["grad_norm"]) > 0
        assert math.isfinite(float(r["data_wait_s"])) and float(r["data_wait_s"]) >= 0
        assert r["gpu_mem_mb"] == ""  # the CPU: no GPU memory to report
    logged = [r for r in rows if r["images_per_s"]]
    assert [int(r["step"]) for r in logged] == [3, 4, 6, 7]  # an interval's throughput on its last row
    assert all(float(r["images_per_s"]) > 0 for r in logged)


def test_grad_norm_is_the_total_l2_norm_before_the_step(tmp_path):
    cfg, data, settings = _setup(tmp_path)
    model = build_from_config(cfg)
    norms: list[float] = []

    def grab(step: int, loss: torch.Tensor) -> None:
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        norms.append(float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))))

    train(model, data, settings, tmp_path / "train_state.pt", on_step=grab)
    logged = [float(r["grad_norm"]) for r in _rows(tmp_path / METRICS_FILE)]
    assert logged == pytest.approx(norms, rel=1e-5)  # the optimiser step leaves .grad as it was


def test_resume_drops_the_rows_after_the_saved_step_and_continues_without_duplicates(tmp_path):
    cfg, data, settings = _setup(tmp_path)
    reference = train(build_from_config(cfg), data, settings, tmp_path / "ref" / "train_state.pt")

    class Killed(Exception):
        pass

    def kill(step: int, loss: torch.Tensor) -> None:
        if step + 1 == 6:  # after the row flush at step 6, past the save at step 4
            raise Killed

    resume = tmp_path / "unit" / "train_state.pt"
    resume.parent.mkdir()
    with pytest.raises(Killed):
        train(build_from_config(cfg), data, settings, resume, on_step=kill)
    assert [int(r["step"]) for r in _rows(resume.with_name(METRICS_FILE))] == [1, 2, 3, 4, 5, 6]

    first_steps: list[list[int]] = []

    def at_start(step: int, loss: torch.Tensor) -> None:
        if not first_steps:
            first_steps.append([int(r["step"]) for r in _rows(resume.with_name(METRICS_FILE))])

    train(build_from_config(cfg), data, settings, resume, on_step=at_start)
    assert first_steps == [[1, 2, 3, 4]]  # resumed at step 4: rows 5 and 6 of the killed run dropped
    rows = _rows(resume.with_name(METRICS_FILE))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert [float(r["loss"]) for r in rows] == reference.losses  # deterministic: the unkilled losses


def test_a_fresh_start_truncates_and_a_resume_keeps_only_well_formed_rows(tmp_path):
    path = tmp_path / METRICS_FILE
    log = MetricsLog(path)
    log.start(0)
    log.append(
        [{"step": s, "loss": 1.0 / s, "lr": 0.1, "grad_norm": 2.0, "data_wait_s": 0.0} for s in (1, 2, 3)]
    )
    log.close()
    with open(path, "a") as f:
        f.write("4,0.25,0.1")  # torn by a kill mid-write
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    log.start(2)
    log.append([{"step": 3, "loss": 0.5}])
    log.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 1.0), (2, 0.5), (3, 0.5)]
    log.start(0)
    log.close()
    assert path.read_text() == ",".join(COLUMNS) + "\n"


def test_training_curves_read_metrics_csv_where_a_unit_has_one(tmp_path):
    cells = [
        _cell(tmp_path, "kvasir_instrument", "mopeft", 70.0),
        _cell(tmp_path, "kvasir_instrument", "baseline", 45.0),
    ]
    for cell, losses in zip(cells, ([0.9] * 10, [0.8] * 10), strict=True):
        unit = cell.parent / "units" / "main"
        unit.mkdir(parents=True, exist_ok=True)
        (unit / "train_log.json").write_text(json.dumps({"losses": losses}))
    live = [1.0, 0.8, 0.6, 0.4, 0.3, 0.2]  # differs from the mopeft cell's train_log.json
    log = MetricsLog(cells[0].parent / "units" / "main" / METRICS_FILE)
    log.start(0)
    log.append([{"step": s, "loss": v, "lr": 1e-3} for s, v in enumerate(live, 1)])
    log.close()

    summary = write_training_curves(cells, tmp_path / "fig" / "training_curves")
    curves = pd.read_csv(tmp_path / "fig" / "training_curves.csv")
    mine = curves[curves["method"] == "mopeft"]
    assert list(mine["loss"]) == live and list(mine["step"]) == [1, 2, 3, 4, 5, 6]
    theirs = curves[curves["method"] == "baseline"]  # no metrics.csv: its train_log.json
    assert list(theirs["loss"]) == [0.8] * 10 and list(theirs["step"]) == list(range(1, 11))
    assert summary.set_index("method")["fell"].to_dict() == {"mopeft": True, "baseline": False}


def _tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``log_dir``, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_equal_metrics_csv_and_a_resume_purges_the_killed_steps(tmp_path):
    pytest.importorskip("tensorboard")  # the `tensorboard` extra; `make test` installs it
    cfg, data, settings = _setup(tmp_path)
    settings = dataclasses.replace(settings, tensorboard=True)
    resume = tmp_path / "unit" / "train_state.pt"
    resume.parent.mkdir()

    class Killed(Exception):
        pass

    def kill(step: int, loss: torch.Tensor) -> None:
        if step + 1 == 6:  # rows 5 and 6 reach the events, the resume file holds step 4
            raise Killed

    with pytest.raises(Killed):
        train(build_from_config(cfg), data, settings, resume, on_step=kill)
    train(build_from_config(cfg), data, settings, resume)

    rows = read_metrics(resume.with_name(METRICS_FILE))
    events = _tensorboard_scalars(resume.with_name("tensorboard"))
    for key in ("loss", "lr", "grad_norm", "images_per_s", "data_wait_s"):
        expected = [(r["step"], r[key]) for r in rows if r[key] is not None]
        got = events[f"train/{key}"]
        # One event per step (the killed run's steps 5 and 6 purged), float32 in the event file.
        assert [s for s, _ in got] == [s for s, _ in expected], key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), key
    assert "train/gpu_mem_mb" not in events  # the CPU: nothing to report, nothing written


def test_tensorboard_without_the_package_is_one_clear_error(tmp_path, monkeypatch):
    import sys

    from mopeft.errors import InputError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if absent
    log = MetricsLog(tmp_path / METRICS_FILE, tmp_path / "tensorboard")
    with pytest.raises(InputError, match=r"pip install 'mopeft\[tensorboard\]'"):
        log.start(0)


@pytest.mark.parametrize("on", [False, True])
def test_config_training_log_tensorboard_reaches_mopeft_train(tmp_path, on):
    import copy

    import yaml

    from mopeft.plan.workflow import Workflow

    root = Path(__file__).resolve().parents[1]
    config = copy.deepcopy(yaml.safe_load((root / "config/demo.yaml").read_text()))
    config["training"]["log"] = {"tensorboard": on}
    wf = Workflow(config, schema=root / "workflow/schemas/config.schema.yaml", root=tmp_path)
    assert ("--tensorboard" in wf.train_args(None)) is on
