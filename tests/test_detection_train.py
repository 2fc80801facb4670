"""FAIR-1M track end to end: miniature -> prepare -> train (with the class MLP) -> detect -> score."""

from __future__ import annotations

import json

import torch

from mopeft.cli import main
from mopeft.data.datasets.common import PrepareOptions
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import dataset_module
from mopeft.methods.checkpoint import load_model, read_checkpoint


def test_fair1m_cell_trains_the_class_mlp_and_scores(tmp_path):
    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    dataset_module("fair1m").write_miniature(raw, seed=0)
    ds = prepare_dataset("fair1m", raw, prepared, PrepareOptions(tile_size=64, extra={"test_every": 3}))
    cell = tmp_path / "cell"
    args = ["train", "--data", str(ds), "--method", "lora", "--arch", "tiny", "--steps", "3",
            "--batch-size", "2", "--lr", "1e-2", "--weight-decay", "0", "--out", str(cell)]
    assert main(args) == 0
    payload = read_checkpoint(cell / "model.safetensors")
    head_keys = [k for k in payload["trainable"] if k.startswith("presence_head.")]
    assert payload["config"]["presence_head"] and head_keys  # the class MLP is trained and saved
    model = load_model(cell / "model.safetensors")
    assert model.presence_head is not None
    for k in head_keys:  # and reloaded exactly
        assert torch.equal(dict(model.named_parameters())[k], payload["trainable"][k])
    dets = tmp_path / "dets.json"
    model_file = str(cell / "model.safetensors")
    assert main(["detect", "--model", model_file, "--data", str(ds), "--out", str(dets)]) == 0
    out = json.loads(dets.read_text())
    assert out["scoring"] == "mask×presence"
    ap = tmp_path / "ap.json"
    assert main(["score-detections", "--pred", str(dets), "--gt", str(ds / "test" / "annotations"),
                 "--method", "lora", "--out", str(ap)]) == 0
    scores = json.loads(ap.read_text())
    assert 0 <= scores["map"] <= 100 and scores["num_images"] == len(list((ds / "test" / "images").iterdir()))
    # provenance travels detect -> score-detections -> Table A.1 (a demo must say it is one)
    assert out["weights"] == scores["weights"] == "random init"
    assert out["synthetic"] is scores["synthetic"] is True
    cfg = tmp_path / "config.yaml"
    cfg.write_text("run: test\n")
    table = tmp_path / "table_a1"
    assert main(["table", "a1", "--cells", str(ap), "--config", str(cfg), "--out", str(table)]) == 0
    md = table.with_suffix(".md").read_text()
    assert "Base weights: random init" in md and "Data: synthetic" in md
