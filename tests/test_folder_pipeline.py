"""Folder datasets in the DAG: declared once in the config, planned and prepared like registered
datasets (own rules up to meta.json, the same cells after it), bad entries named by config key."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from workflow_helpers import run_snakemake, workflow_copy

from mopeft.io import read_json

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "config/demo.yaml").read_text())


def _rules(out: str) -> Counter:
    return Counter(re.findall(r"^(?:local)?rule (\w+):$", out, flags=re.M))


def _with(wf: Path, **overrides) -> str:
    (wf / "extra.yaml").write_text(yaml.safe_dump(overrides))
    return "extra.yaml"


def test_the_demos_generated_dataset_plans_its_own_preparation(tmp_path):
    wf = workflow_copy(tmp_path)
    target = "results/demo/cells/shapes/lora/default/seed0/metrics.json"
    res = run_snakemake(wf, target, "-n", "--configfile", "config/demo.yaml")
    assert res.returncode == 0, res.out[-3000:]
    assert _rules(res.out) == Counter(
        weights=1, scenes=1, custom_spec=1, prepare_folder=1, train=1, evaluate=1, combine=1
    )


def test_user_folders_are_prepared_through_the_spec_file_and_every_file_is_an_input(tmp_path):
    wf = workflow_copy(tmp_path, package=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        for sub in ("images", "masks"):
            (wf / "mine" / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(wf / f"mine/images/p{i}.png")
        Image.fromarray(rng.integers(0, 2, (16, 20), dtype=np.uint8)).save(wf / f"mine/masks/p{i}.png")
    entry = {"images": "mine/images", "masks": "mine/masks", "classes": ["bg", "fg"], "domain": "Lab"}
    extra = _with(wf, datasets=[*DEMO["datasets"], "mine"], custom_datasets={"mine": entry})
    target = "data/demo/prepared/mine/meta.json"
    res = run_snakemake(wf, target, "--cores", "1", "--configfile", "config/demo.yaml", extra)
    assert res.returncode == 0, res.out[-3000:]
    meta = read_json(wf / target)
    assert meta["domain"] == "Lab" and meta["counts"] == {"train": 4, "test": 1}
    assert read_json(wf / "data/demo/prepared/mine.folder.json")["folders"]["all"]["masks"] == "mine/masks"
    # a new mask value is a change to an input file: the preparation reruns (and refuses it)
    Image.fromarray(np.full((16, 20), 7, dtype=np.uint8)).save(wf / "mine/masks/p3.png")
    plan = run_snakemake(wf, target, "-n", "--configfile", "config/demo.yaml", extra)
    assert plan.returncode == 0 and _rules(plan.out) == Counter(prepare_folder=1), plan.out[-3000:]
    res = run_snakemake(wf, target, "--cores", "1", "--configfile", "config/demo.yaml", extra)
    log = (wf / "logs/demo/prepare/mine.log").read_text()
    assert res.returncode != 0 and "mine/masks/p3.png: mask values [7] are not classes" in log


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"kvasir_instrument": {"images": "a", "masks": "b", "classes": ["x", "y"]}},
            "config custom_datasets.kvasir_instrument: 'kvasir_instrument' is a registered dataset",
        ),
        (
            {
                "mine": {
                    "images": "a",
                    "masks": "b",
                    "source": {"generate": "scenes", "count": 4},
                    "classes": ["x", "y"],
                }
            },
            "config custom_datasets.mine: give exactly one of images + masks, train + test",
        ),
        (
            {"mine": {"images": "a", "masks": "b", "classes": ["x", "y"], "colour": "no"}},
            "Additional properties are not allowed ('colour' was unexpected)",
        ),
    ],
    ids=["registered-key", "two-layouts", "unknown-key"],
)
def test_bad_entries_are_refused_naming_the_key(tmp_path, entry, message):
    """The workflow's checks (mopeft.plan.workflow, as common.smk builds it; the schema first)."""
    from mopeft.plan.jobs import merged
    from mopeft.plan.workflow import ConfigError, Workflow

    study = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config = merged(study, DEMO, {"custom_datasets": entry})
    with pytest.raises(ConfigError) as err:
        Workflow(config, schema=ROOT / "workflow/schemas/config.schema.yaml", root=tmp_path)
    assert message in str(err.value)
