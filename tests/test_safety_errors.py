"""The errors a newcomer meets (issue 11): one line naming the file and what to do, through
`mopeft.cli`'s error path (exit code 2, no traceback), and checked before any training starts."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
from conftest import write_blocky_dataset
from PIL import Image

from mopeft.cli import build_parser, main
from mopeft.data.registry import DATASETS
from mopeft.model.weights import VIT_B_FILENAME, VIT_B_URL

FAST = ["--arch", "tiny", "--batch-size", "2", "--lr", "1e-2", "--weight-decay", "0"]


def _train(data: Path, out: Path, steps: int = 1) -> list[str]:
    """`mopeft train` of a random-init tiny LoRA model (the tests' quickest)."""
    return ["train", "--data", str(data), "--method", "lora", "--steps", str(steps), *FAST, "--out", str(out)]


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare", "--dataset", "kvasir_instrumnet", "--raw", "r", "--out", "o"],
        ["miniature", "--dataset", "kvasir_instrumnet", "--out", "o"],
        ["download", "--dataset", "kvasir_instrumnet", "--out", "o"],
    ],
)
def test_a_dataset_key_typo_lists_the_valid_keys(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'kvasir_instrumnet'" in err and all(key in err for key in DATASETS)
    assert not (tmp_path / "o").exists()


def test_offline_weights_say_where_to_place_the_file(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert main(["weights", "--arch", "vit_b", "--out", str(tmp_path / "weights")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert VIT_B_URL in err and str(tmp_path / "weights" / VIT_B_FILENAME) in err and "offline" in err


def _write_label(path: Path, value: int) -> None:
    label = np.zeros((40, 56), dtype=np.uint8)
    label[5:9, 5:9] = value
    Image.fromarray(label, mode="L").save(path)


def test_train_refuses_an_out_of_range_label_before_building_the_model(tmp_path, capsys, monkeypatch):
    """Instead of `IndexError: Target 200 is out of bounds` (a device-side assert on a GPU) mid-run."""
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=3, n_test=1)
    bad = ds / "train" / "labels" / "train_001.png"
    _write_label(bad, 200)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the labels were checked")

    monkeypatch.setattr("mopeft.commands.train.build_from_config", no_model)
    assert main(_train(ds, tmp_path / "o", steps=2)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "[200]" in err and "mopeft prepare" in err


def test_a_jpeg_named_png_is_refused_as_not_a_png(tmp_path, capsys):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    fake = ds / "train" / "labels" / "train_000.png"
    Image.fromarray(np.zeros((40, 56), dtype=np.uint8), mode="L").save(fake, format="JPEG")
    assert main(_train(ds, tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(fake) in err and "not a PNG" in err and "JPEG" in err


def test_train_without_checkpoint_warns_loudly_and_arch_has_help(tmp_path, caplog):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    with caplog.at_level("WARNING"):
        assert main(_train(ds, tmp_path / "o")) == 0
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "RANDOMLY INITIALISED" in r.message]
    assert warned and "--checkpoint" in warned[0].message
    parser, _ = build_parser(["train"])
    train = next(a for a in parser._subparsers._actions if a.dest == "command").choices["train"]
    arch = next(a for a in train._actions if "--arch" in a.option_strings)
    from mopeft.model.arch import ARCHS

    assert arch.help and set(arch.choices) == set(ARCHS)


def test_evaluate_names_the_label_file_with_a_bad_value(tmp_path, capsys):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=2)
    assert main(_train(ds, tmp_path / "cell")) == 0
    capsys.readouterr()  # the training's own log lines
    model = tmp_path / "cell" / "model.safetensors"
    bad = ds / "test" / "labels" / "test_001.png"
    good = bad.read_bytes()
    _write_label(bad, 200)
    try:
        argv = ["evaluate", "--model", str(model), "--data", str(ds), "--out", str(tmp_path / "e")]
        assert main(argv) == 2
    finally:
        bad.write_bytes(good)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "[200]" in err
