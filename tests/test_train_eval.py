"""Training, resume-after-kill, evaluation and unit combination, end to end on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import combine_args, write_blocky_dataset

from mopeft.cli import main
from mopeft.data.loading.loader import SegmentationPairs
from mopeft.data.loading.preprocess import preprocess_image
from mopeft.data.prepared.units import load_unit
from mopeft.evaluation.evaluate import predict_split
from mopeft.evaluation.metrics import ConfusionMatrix
from mopeft.methods import METHODS
from mopeft.methods.checkpoint import build_from_config, load_model, model_config, read_checkpoint
from mopeft.model.weights import TINY_ASSET, TINY_SHA256
from mopeft.peft.state import trainable_state_dict
from mopeft.train.loop import TrainSettings, batch_indices, train

# Resume and checkpoint tests only need determinism: a random-init tiny SAM is enough for them.
FAST = ["--arch", "tiny", "--batch-size", "2", "--lr", "1e-2", "--weight-decay", "0"]
# What the demo fine-tunes: the packaged pretrained tiny SAM at the demo's optimiser settings.
PRETRAINED = [
    "--arch", "tiny", "--batch-size", "2", "--lr", "1e-3", "--weight-decay", "1e-4",
    "--checkpoint", str(TINY_ASSET), "--checkpoint-sha256", TINY_SHA256,
]  # fmt: skip


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_and_evaluates_through_the_cli(tmp_path, method):
    """The CLI round trip per method (learning itself is tests/test_learning.py's job)."""
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=2)
    out = tmp_path / "cell"
    args = ["train", "--data", str(ds), "--method", method, "--steps", "20", *PRETRAINED, "--out", str(out)]
    assert main(args) == 0
    losses = json.loads((out / "train_log.json").read_text())["losses"]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert not (out / "train_state.pt").exists()  # the resume file is removed once the model exists
    model_file = str(out / "model.safetensors")
    assert main(["evaluate", "--model", model_file, "--data", str(ds), "--out", str(out / "eval")]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["num_images"] == 2
    assert metrics["weights"] == TINY_SHA256
    assert 0 <= metrics["miou"] <= 100
    gates = np.load(out / "eval" / "gates.npz")
    if "prefix_gate" in METHODS[method].defaults:  # the MoPEFT family records its gates
        assert set(gates.files) == {"lora_q", "lora_v", "prefix", "adapter"}
        assert all(gates[k].shape == (2, 4) for k in gates.files)  # 2 images x 4 tiny blocks
        assert all(((gates[k] > 0) & (gates[k] < 1)).all() for k in gates.files)
    else:
        assert gates.files == []


def test_checkpoint_holds_only_trainable_tensors_and_reloads_exactly(tmp_path):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    out = tmp_path / "cell"
    main(["train", "--data", str(ds), "--method", "lora", "--steps", "3", *FAST, "--out", str(out)])
    payload = read_checkpoint(out / "model.safetensors")
    model = load_model(out / "model.safetensors")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(payload["trainable"]) == trainable
    for name, value in trainable_state_dict(model).items():
        assert torch.equal(value, payload["trainable"][name])
    # frozen weights are rebuilt from the recorded init seed, not stored
    fresh = build_from_config(payload["config"])
    frozen = {n: p for n, p in fresh.named_parameters() if not p.requires_grad}
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def _run(
    tmp_path: Path, method: str, steps: int, kill_after: int | None, workers: int = 0
) -> dict[str, torch.Tensor]:
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=5, n_test=1)
    unit = load_unit(ds, "main")
    cfg = model_config("tiny", unit.num_classes, method, METHODS[method].defaults, 96, None, None, 0)
    settings = TrainSettings(
        steps=steps, batch_size=2, lr=1e-2, weight_decay=1e-4, checkpoint_every=2, seed=3, workers=workers
    )
    resume = tmp_path / f"{method}-{kill_after}.state"

    class Killed(Exception):
        pass

    def kill(step: int, loss: torch.Tensor) -> None:
        if kill_after is not None and step == kill_after:
            raise Killed

    model = build_from_config(cfg)
    data = SegmentationPairs(unit.train, 96)
    if kill_after is not None:
        with pytest.raises(Killed):
            train(model, data, settings, resume, on_step=kill)
        model = build_from_config(cfg)  # a new process: fresh model, state only from the resume file
    train(model, data, settings, resume)
    return trainable_state_dict(model)


@pytest.mark.parametrize("kill_after", [0, 3, 4])  # before the first save, between saves, right after one
def test_resume_after_kill_reaches_the_same_weights(tmp_path, kill_after):
    reference = _run(tmp_path / "a", "mopeft", 7, None)
    resumed = _run(tmp_path / "b", "mopeft", 7, kill_after)
    assert reference.keys() == resumed.keys()
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), k


@pytest.mark.parametrize("method", ["mopeft", "decoder_ft"])  # decoder_ft: through the encoder cache
def test_resume_with_dataloader_workers_is_bit_identical(tmp_path, method):
    """Two worker processes, killed between saves and resumed: the same weights as 0 workers, unkilled."""
    reference = _run(tmp_path / "a", method, 7, None, workers=0)
    resumed = _run(tmp_path / "b", method, 7, 3, workers=2)
    assert reference.keys() == resumed.keys()
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), k


def test_cached_and_uncached_decoder_ft_train_the_same_weights_and_metrics(tmp_path):
    """The embedding cache is an optimisation only: CPU fp32 weights within 1e-6, the same mIoU."""
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=5, n_test=3)
    unit = load_unit(ds, "main")
    cfg = model_config("tiny", unit.num_classes, "decoder_ft", {}, 96, str(TINY_ASSET), TINY_SHA256, 0)
    results = {}
    for mode in ("auto", "off"):
        model = build_from_config(cfg)
        settings = TrainSettings(steps=9, batch_size=2, lr=1e-3, seed=1, encoder_cache=mode)
        run = train(model, SegmentationPairs(unit.train, 96), settings, tmp_path / f"{mode}.state")
        assert run.timing["encoder_cache"] is (mode == "auto")
        cm, _, per_image = predict_split(model, SegmentationPairs(unit.test, 96), torch.device("cpu"))
        results[mode] = (trainable_state_dict(model), cm.compute()["miou"], per_image, run.losses)
    (cached, miou_c, img_c, loss_c), (plain, miou_p, img_p, loss_p) = results["auto"], results["off"]
    assert cached.keys() == plain.keys()
    assert max((cached[k] - plain[k]).abs().max().item() for k in cached) < 1e-6
    assert miou_c == miou_p and np.array_equal(img_c, img_p)
    assert np.allclose(loss_c, loss_p, atol=1e-6)


def test_sigkilled_training_process_resumes_to_identical_weights(tmp_path):
    """A real SIGKILL of `mopeft train` mid-run, restarted: same model.safetensors tensors as an
    uninterrupted run."""
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=6, n_test=1)
    args = [
        sys.executable,
        "-m",
        "mopeft.cli",
        "train",
        "--data",
        str(ds),
        "--method",
        "adapter",
        "--steps",
        "40",
        "--checkpoint-every",
        "1",
        *FAST,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*args, "--out", str(tmp_path / "ref")], check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*args, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not (killed / "train_state.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    state = torch.load(killed / "train_state.pt", weights_only=True)
    assert 0 < state["step"] < 40
    subprocess.run([*args, "--out", str(killed)], check=True, env=env, capture_output=True)
    a = read_checkpoint(tmp_path / "ref" / "model.safetensors")["trainable"]
    b = read_checkpoint(killed / "model.safetensors")["trainable"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batches_cover_each_epoch_exactly_once():
    seen = sorted(i for step in range(3) for i in batch_indices(7, 3, step, seed=1))
    assert seen == list(range(7))
    assert batch_indices(7, 3, 5, seed=1) == batch_indices(7, 3, 5, seed=1)


def _unit_eval(d: Path, unit: str, pred: np.ndarray, gt: np.ndarray, k: int) -> Path:
    cm = ConfusionMatrix(k)
    cm.update(pred, gt)
    d.mkdir(parents=True)
    cm.save(d / "confusion.npy")
    res = cm.compute()
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "unit": unit,
                "miou": res["miou"],
                "num_images": 1,
                "method": "lora",
                "method_options": {"r": 8},
                "arch": "tiny",
                "image_size": 96,
                "weights": "random init",
                "seed": 0,
                "classes": [f"c{i}" for i in range(len(res["per_class_iou"]))],
                "per_class_iou": {f"c{i}": v for i, v in enumerate(res["per_class_iou"])},
            }
        )
    )
    np.savez(d / "gates.npz")
    return d


def _combine(units: list[Path], meta: Path, out: Path, variant: str = "default") -> int:
    return main(combine_args(units, meta, out, variant))


def test_combine_pools_folds_and_averages_tasks(tmp_path):
    gt1, pr1 = np.array([[0, 0, 1, 1]]), np.array([[0, 0, 0, 1]])
    gt2, pr2 = np.array([[1, 1, 1, 0]]), np.array([[1, 1, 1, 1]])
    cell = tmp_path / "results/demo/cells/dz/lora/r4/seed0"
    u0 = _unit_eval(cell / "units/fold0/eval", "fold0", pr1, gt1, 2)
    u1 = _unit_eval(cell / "units/fold1/eval", "fold1", pr2, gt2, 2)
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps({"dataset": "dz", "classes": ["c0", "c1"], "train_split": "none", "tasks": []})
    )
    assert _combine([u0, u1], meta, cell / "metrics.json", variant="r4") == 0
    out = json.loads((cell / "metrics.json").read_text())
    # pooled over both folds: class 0: tp 2, gt 3, pred 3 -> 2/4; class 1: tp 4, gt 5, pred 5 -> 4/6
    # (the mean of the two folds' own mIoUs would be (7/12 + 3/8)/2 = 47.9 %: pooling is not averaging)
    assert out["miou"] == pytest.approx(100 * (2 / 4 + 4 / 6) / 2)
    assert out["combine"] == "pool" and out["variant"] == "r4" and out["seed"] == 0
    assert out["gates"] == ["units/fold0/eval/gates.npz", "units/fold1/eval/gates.npz"]
    meta.write_text(json.dumps({"dataset": "px", "classes": ["c0", "c1"], "tasks": ["a", "b"]}))
    ta = _unit_eval(cell / "units/a/eval", "a", pr1, gt1, 2)
    tb = _unit_eval(cell / "units/b/eval", "b", pr2, gt2, 2)
    assert _combine([ta, tb], meta, tmp_path / "m.json") == 0
    mean = json.loads((tmp_path / "m.json").read_text())
    per_unit = [json.loads((u / "metrics.json").read_text())["miou"] for u in (ta, tb)]
    assert mean["miou"] == pytest.approx(np.mean(per_unit)) and mean["combine"] == "mean"


def test_train_rejects_bad_input_with_a_clear_error(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "nope"),
                "--method",
                "lora",
                "--steps",
                "1",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "nope/meta.json" in capsys.readouterr().err
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    ds = write_blocky_dataset(tmp_path / "p", n_train=1, n_test=1)
    assert main(["evaluate", "--model", str(bad), "--data", str(ds), "--out", str(tmp_path / "e")]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_vpt_deep_checkpoint_ships_folded_tokens_and_reloads(tmp_path):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    out = tmp_path / "cell"
    main(["train", "--data", str(ds), "--method", "vpt_deep", "--steps", "2", *FAST, "--out", str(out)])
    trainable = read_checkpoint(out / "model.safetensors")["trainable"]
    assert not any(".reparam." in k for k in trainable)  # the training-only MLP is not shipped
    folded = [k for k in trainable if k.endswith("prefix.folded_tokens")]
    assert len(folded) == 4 and all(trainable[k].shape == (20, 64) for k in folded)  # L x C per block
    model = load_model(out / "model.safetensors")
    image, _ = SegmentationPairs(load_unit(ds, "main").test, 96).load_raw(0)
    with torch.no_grad():
        logits = model(preprocess_image(image, 96)[0][None])
    assert torch.isfinite(logits).all()


def test_sam_weights_are_refused_for_a_random_init_model(tmp_path):
    # The trained tensors sit on a seeded random base; loading SAM weights under them (e.g.
    # `mopeft evaluate --weights`) would silently evaluate a different model.
    from mopeft.model.arch import ARCHS, build_sam_parts

    enc, prompt, dec = build_sam_parts(ARCHS["tiny"])
    state = {f"image_encoder.{k}": v for k, v in enc.state_dict().items()}
    state.update({f"prompt_encoder.{k}": v for k, v in prompt.state_dict().items()})
    state.update({f"mask_decoder.{k}": v for k, v in dec.state_dict().items()})
    weights = tmp_path / "sam_tiny.pth"
    torch.save(state, weights)
    cfg = model_config("tiny", 2, "lora", METHODS["lora"].defaults, 96, None, None, 0)
    with pytest.raises(ValueError, match="random init"):
        build_from_config(cfg, weights_path=weights)


def test_compiled_training_runs_on_the_cpu_and_matches_eager(tmp_path):
    """The opt-in torch.compile path (aot_eager: dynamo capture + AOT autograd, no C++ build) trains
    the same model as eager mode."""
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=4, n_test=1)
    unit = load_unit(ds, "main")
    cfg = model_config("tiny", unit.num_classes, "mopeft", METHODS["mopeft"].defaults, 96, None, None, 0)
    runs = {}
    for backend in (None, "aot_eager"):
        model = build_from_config(cfg)
        settings = TrainSettings(steps=3, batch_size=2, lr=1e-3, compile=backend)
        runs[backend] = train(model, SegmentationPairs(unit.train, 96), settings, tmp_path / f"{backend}.pt")
    assert runs["aot_eager"].timing["compile"] == "aot_eager"
    assert np.allclose(runs[None].losses, runs["aot_eager"].losses, atol=1e-5)
