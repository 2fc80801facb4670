"""The tiny SAM's pretraining: reproducible scenes, a deterministic checkpoint, the packaged asset."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np

from mopeft.cli import main
from mopeft.data.synthetic.scenes import scene, scenes
from mopeft.io import read_json, sha256_file
from mopeft.methods.build import build_model
from mopeft.model.weights import TINY_ASSET, TINY_FILENAME, TINY_SHA256
from mopeft.train.pretrain import PretrainSettings, pretrain, save_state


def test_scenes_are_a_pure_function_of_seed_and_index():
    a, b = scene(0, 5), scene(0, 5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(scene(0, 6)[0], a[0]) and not np.array_equal(scene(1, 5)[0], a[0])
    images, masks = scenes(3, range(32))
    assert images.shape == (32, 96, 96, 3) and images.dtype == np.uint8 and masks.dtype == bool
    fractions = masks.mean(axis=(1, 2))
    assert (fractions > 0).all() and (fractions < 1).all()  # every scene has object and ground


def test_pretraining_is_deterministic_and_learns(tmp_path):
    settings = PretrainSettings(steps=120, pool=64, held_out=32, batch_size=8, warmup=10)
    state_a, summary_a = pretrain(settings)
    state_b, _ = pretrain(settings)
    sha_a, sha_b = save_state(tmp_path / "a.pth", state_a), save_state(tmp_path / "b.pth", state_b)
    assert sha_a == sha_b  # same bytes: the file name does not leak into the archive either
    # 120 steps from random init: the loss falls and held-out objects start to be found.
    assert summary_a["loss_last_50"] < 0.8 * summary_a["loss_first_50"]
    assert summary_a["held_out_iou_after"] > summary_a["held_out_iou_before"] + 0.1
    other, _ = pretrain(replace(settings, seed=1))
    assert save_state(tmp_path / "c.pth", other) != sha_a


def test_packaged_checkpoint_is_the_pinned_one_and_loads_strictly():
    assert TINY_ASSET.name == TINY_FILENAME and sha256_file(TINY_ASSET) == TINY_SHA256
    summary = read_json(TINY_ASSET.with_name(TINY_FILENAME + ".json"))
    # The packaged file was made by `mopeft pretrain-tiny` with its defaults, and it learnt the task.
    assert summary["sha256"] == TINY_SHA256 and summary["settings"] == asdict(PretrainSettings())
    assert summary["held_out_iou_after"] > 0.7 > summary["held_out_iou_before"]
    model = build_model("tiny", 2, "lora", checkpoint=TINY_ASSET, checkpoint_sha256=TINY_SHA256)
    assert model.num_classes == 2


def test_cli_pretrains_and_the_weights_command_installs_the_packaged_file(tmp_path, capsys):
    out = tmp_path / "w.pth"
    args = ["pretrain-tiny", "--steps", "3", "--pool", "8", "--held-out", "4", "--batch-size", "4"]
    assert main([*args, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["sha256"] == sha256_file(out) == read_json(tmp_path / "w.pth.json")["sha256"]
    assert main(["weights", "--arch", "tiny", "--out", str(tmp_path / "weights")]) == 0
    assert sha256_file(tmp_path / "weights" / TINY_FILENAME) == TINY_SHA256
