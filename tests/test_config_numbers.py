"""Numbers given on Snakemake's command line (``--config 'training={lr: 0.002}'``) arrive as
strings in nested mappings; the pipeline's config check turns them into the numbers the schema
asks for and leaves string settings alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_helpers import ROOT, run_snakemake, workflow_copy

from mopeft.errors import InputError
from mopeft.plan.jobs import load_config, validate_config

SCHEMA = {
    "type": "object",
    "properties": {
        "training": {
            "type": "object",
            "properties": {
                "lr": {"type": "number"},
                "steps": {"type": "integer"},
                "name": {"type": "string"},
                "workers": {"oneOf": [{"type": "integer"}, {"type": "string", "enum": ["auto"]}]},
                "limit": {"type": ["integer", "null"]},
            },
        }
    },
}


def test_numeric_strings_become_numbers_where_the_schema_wants_numbers():
    config = {"training": {"lr": "0.002", "steps": "60", "name": "007", "workers": "4", "limit": "8"}}
    validate_config(config, SCHEMA)
    training = config["training"]
    assert training["lr"] == 0.002 and isinstance(training["lr"], float)
    assert training["steps"] == 60 and isinstance(training["steps"], int)
    assert training["name"] == "007"  # a string setting stays a string
    assert training["workers"] == 4 and training["limit"] == 8


def test_a_string_that_is_no_number_is_still_refused():
    with pytest.raises(InputError, match=r"training\.lr"):
        validate_config({"training": {"lr": "fast"}}, SCHEMA)
    config = {"training": {"workers": "auto"}}
    validate_config(config, SCHEMA)
    assert config["training"]["workers"] == "auto"


def test_the_pipeline_schema_takes_a_string_learning_rate(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("training: {lr: '0.002', batch_size: '3'}\n")
    config = load_config([ROOT / "config/config.yaml", ROOT / "config/demo.yaml", override])
    assert config["training"]["lr"] == 0.002 and config["training"]["batch_size"] == 3


def test_a_snakemake_dry_run_accepts_numbers_in_a_config_mapping(tmp_path: Path):
    workdir = workflow_copy(tmp_path)
    res = run_snakemake(
        workdir,
        "-n",
        "-p",
        "--configfile",
        "config/demo.yaml",
        "--config",
        "training={lr: 0.002, batch_size: 3}",
    )
    assert res.returncode == 0, res.out[-2000:]
    assert "--batch-size 3 --lr 0.002 " in res.out
