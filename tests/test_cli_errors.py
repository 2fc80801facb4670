"""What ``mopeft`` does with an exception: user errors are one line and exit 2, bugs keep their
traceback and exit 1, and every command's help renders.

The CLI used to turn every ``ValueError`` into ``mopeft <cmd>: error: ...`` (exit 2, no traceback),
so a reshape bug read like a bad flag. These tests plant a bug and bad inputs and check that each
reaches the user as what it is.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mopeft import cli
from mopeft.cli import COMMANDS, _command_help, main
from mopeft.errors import InputError, UserError

BUG = "cannot reshape array of size 3 into shape (2,2)"


def _one_line_error(err: str, command: str) -> str:
    """The single ``mopeft <command>: error: ...`` line of ``err`` (fails if there is more)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mopeft {command}: error: "), err
    return lines[0]


# ------------------------------------------------------------------------------------------ help
def test_top_level_help_shows_each_commands_real_one_line_help(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping (it may break at a hyphen)
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    words = " ".join(capsys.readouterr().out.split())  # a long name puts its help on the next line
    for name, module_name in COMMANDS.items():
        help_text = importlib.import_module(module_name).HELP
        assert isinstance(help_text, str) and len(help_text) > 10 and "\n" not in help_text, name
        assert _command_help(module_name) == help_text, name  # read from source, without importing
        assert " ".join([name, *help_text.split()]) in words, name


def test_help_read_from_source_handles_a_parenthesised_string(tmp_path, monkeypatch) -> None:
    """``figure``'s HELP spans lines in parentheses; it used to show as ``(``."""
    (tmp_path / "wrapped_help_cmd.py").write_text('HELP = (\n    "first part, "\n    "second part"\n)\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _command_help("wrapped_help_cmd") == "first part, second part"
    assert _command_help("mopeft.commands.figure").startswith("draw a report figure")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_exits_0(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mopeft {command}")


def test_user_error_is_re_exported_by_cli() -> None:
    assert cli.UserError is UserError


# ------------------------------------------------------------------------------- bugs vs. users
def _plant(monkeypatch, exc: BaseException) -> None:
    """Make ``mopeft methods`` raise ``exc`` from inside its run()."""
    module = importlib.import_module("mopeft.commands.methods")

    def broken_run(args):
        raise exc

    monkeypatch.setattr(module, "run", broken_run)


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_a_bug_in_a_command_propagates_with_its_traceback(monkeypatch, capsys, verbose) -> None:
    _plant(monkeypatch, ValueError(BUG))
    with pytest.raises(ValueError, match="cannot reshape"):
        main([*verbose, "methods"])
    assert "error:" not in capsys.readouterr().err  # not dressed up as a user mistake


def test_a_bug_exits_1_with_a_traceback_from_the_console_entry() -> None:
    code = (
        "import sys, mopeft.commands.methods as m\n"
        f"def run(args): raise ValueError({BUG!r})\n"
        "m.run = run\n"
        "from mopeft.cli import main\n"
        "sys.exit(main(['methods']))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "Traceback (most recent call last)" in res.stderr
    assert f"ValueError: {BUG}" in res.stderr
    assert "mopeft methods: error:" not in res.stderr


def test_a_user_error_is_one_line_exit_2(monkeypatch, capsys) -> None:
    _plant(monkeypatch, InputError("config.yaml: key 'steps' must be a positive integer"))
    assert main(["methods"]) == 2
    line = _one_line_error(capsys.readouterr().err, "methods")
    assert line.endswith("config.yaml: key 'steps' must be a positive integer")


def test_verbose_adds_the_user_errors_traceback(monkeypatch, capsys) -> None:
    _plant(monkeypatch, InputError("bad.json: not valid JSON"))
    assert main(["-v", "methods"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1] == "mopeft methods: error: bad.json: not valid JSON"


def test_argparse_errors_stay_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["score", "--no-such-flag"])
    assert exc.value.code == 2


# ------------------------------------------------------------------------------------ bad input
def _train_argv(data: Path, out: Path) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--method",
        "lora",
        "--arch",
        "tiny",
        "--steps",
        "1",
        "--out",
        str(out),
    ]


def test_missing_data_folder_names_the_file(tmp_path, capsys) -> None:
    missing = tmp_path / "not_prepared"
    assert main(_train_argv(missing, tmp_path / "out")) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert str(missing / "meta.json") in line and "not found" in line


def test_malformed_meta_json_names_the_file(tmp_path, capsys) -> None:
    data = tmp_path / "ds"
    data.mkdir()
    (data / "meta.json").write_text('{"classes": ["a", "b"],')  # truncated
    assert main(_train_argv(data, tmp_path / "out")) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert f"{data / 'meta.json'}: not valid JSON" in line


# ----------------------------------------------------- converted raise sites, through the CLI
def _per_image_npz(path: Path) -> Path:
    counts = np.array([[[5, 1, 0], [3, 0, 1]], [[4, 0, 0], [2, 1, 1]]], dtype=np.int64)  # (N, K, 3)
    np.savez(path, images=np.array(["a", "b"]), counts=counts)
    return path


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["datasets", "--dataset", "nope"], "unknown dataset 'nope'"),  # commands/datasets.py
        (["params", "--arch", "tiny", "--method", "nope"], "unknown method 'nope'"),  # methods/registry
        (["params", "--arch", "tiny", "--method", "lora", "--set", "r=0"], "LoRA rank must be positive"),
        (["params", "--arch", "tiny", "--method", "lora", "--image-size", "50"], "image size 50"),
        (["prepare", "--spec", "s.json", "--dataset", "x", "--out", "o"], "--spec names the whole folder"),
    ],
)
def test_bad_flags_are_one_line_errors(argv, expected, capsys) -> None:
    assert main(argv) == 2
    assert expected in _one_line_error(capsys.readouterr().err, argv[0])


def test_score_missing_prediction_folder(tmp_path, capsys) -> None:
    gt = tmp_path / "gt"
    gt.mkdir()
    argv = ["score", "--pred", str(tmp_path / "nope"), "--gt", str(gt), "--num-classes", "2"]
    assert main(argv) == 2
    line = _one_line_error(capsys.readouterr().err, "score")
    assert f"{tmp_path / 'nope'}: prediction folder not found" in line


def test_bootstrap_bad_resamples_and_bad_npz(tmp_path, capsys) -> None:
    good = _per_image_npz(tmp_path / "per_image.npz")
    assert main(["bootstrap", "--cell", str(good), "--resamples", "1"]) == 2
    assert "--resamples" in _one_line_error(capsys.readouterr().err, "bootstrap")
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.array(["a"]))  # no counts
    assert main(["bootstrap", "--cell", str(bad)]) == 2
    line = _one_line_error(capsys.readouterr().err, "bootstrap")
    assert f"{bad}: " in line and "expected arrays 'images' and 'counts'" in line


def test_combine_missing_unit_folder(tmp_path, capsys) -> None:
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"dataset": "x", "classes": ["a", "b"], "train_split": "train"}))
    unit = tmp_path / "units" / "main" / "eval"
    argv = [
        "combine",
        "--units",
        str(unit),
        "--dataset-meta",
        str(meta),
        "--variant",
        "default",
        "--seed",
        "0",
    ]
    argv += ["--out", str(tmp_path / "m.json")]
    assert main(argv) == 2
    assert f"{unit / 'metrics.json'}: file not found" in _one_line_error(capsys.readouterr().err, "combine")


def test_predict_not_a_checkpoint(tmp_path, capsys) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"not a torch file")
    images = tmp_path / "images"
    images.mkdir()
    argv = ["predict", "--model", str(model), "--images", str(images), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert str(model) in _one_line_error(capsys.readouterr().err, "predict")
    argv[2] = str(tmp_path / "missing.pt")
    assert main(argv) == 2
    assert f"{tmp_path / 'missing.pt'}: checkpoint not found" in _one_line_error(
        capsys.readouterr().err, "predict"
    )
