"""Fig. 4.2: gate counts from a hand-made gates.npz equal the hand-computed counts; PNG and PDF written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mopeft.cli import main as cli_main

# 2 images x 3 layers. LoRA = mean(q, v) = [[.8, .3, .4], [.6, .6, .1]].
GATES = {
    "lora_q": [[0.9, 0.2, 0.6], [0.4, 0.7, 0.1]],
    "lora_v": [[0.7, 0.4, 0.2], [0.8, 0.5, 0.1]],
    "prefix": [[0.1, 0.9, 0.3], [0.2, 0.3, 0.7]],
    "adapter": [[0.6, 0.2, 0.55], [0.9, 0.1, 0.75]],
}


def _mopeft_cell(
    root: Path, dataset: str, units: list[dict[str, list[list[float]]]], method: str = "mopeft"
) -> Path:
    folder = root / dataset / method / "default" / "seed0"
    rels = []
    for i, gates in enumerate(units):
        rel = f"units/u{i}/eval/gates.npz"
        (folder / rel).parent.mkdir(parents=True)
        np.savez(folder / rel, **{k: np.asarray(v) for k, v in gates.items()})
        rels.append(rel)
    path = folder / "metrics.json"
    path.write_text(
        json.dumps(
            {
                "dataset": dataset,
                "method": method,
                "variant": "default",
                "seed": 0,
                "miou": 50.0,
                "gates": rels,
            }
        )
    )
    return path


def test_gate_counts_and_files(tmp_path: Path) -> None:
    kvasir = _mopeft_cell(tmp_path, "kvasir_instrument", [GATES])
    # iSAID: two units of one image each (concatenated over images): image 0 of GATES, then image 1.
    isaid = _mopeft_cell(
        tmp_path, "isaid", [{k: [v[0]] for k, v in GATES.items()}, {k: [v[1]] for k, v in GATES.items()}]
    )
    other = _mopeft_cell(tmp_path, "isaid", [GATES], method="lora")  # not MoPEFT: skipped
    out = tmp_path / "fig" / "gate_frequency"
    assert (
        cli_main(
            ["figure", "gate-frequency", "--cells", str(kvasir), str(isaid), str(other), "--out", str(out)]
        )
        == 0
    )
    counts = pd.read_csv(out.with_suffix(".csv"))
    kv = counts[counts["dataset"] == "kvasir_instrument"].set_index("module")
    assert kv.loc[["LoRA", "Prefix", "Adapter"], "calls_gt_threshold"].tolist() == [3, 2, 4]
    assert kv.loc[["LoRA", "Prefix", "Adapter"], "argmax_selected"].tolist() == [2, 1, 3]
    assert kv["max_calls"].tolist() == [6, 6, 6] and kv["images"].tolist() == [2, 2, 2]
    assert kv.loc[["LoRA", "Prefix", "Adapter"], "mean_gate"].tolist() == pytest.approx(
        [0.4667, 0.4167, 0.5167]
    )
    isa = counts[counts["dataset"] == "isaid"].set_index("module")
    assert isa["calls_gt_threshold"].tolist() == kv["calls_gt_threshold"].tolist()
    assert isa["images"].tolist() == [2, 2, 2]
    layers = pd.read_csv(tmp_path / "fig" / "gate_frequency_layers.csv")
    lora = layers[(layers["dataset"] == "kvasir_instrument") & (layers["module"] == "LoRA")]
    assert lora["mean_gate"].tolist() == pytest.approx([0.7, 0.45, 0.25])
    for ext in ("png", "pdf"):
        f = out.with_suffix(f".{ext}")
        assert f.stat().st_size > 1000
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_missing_gates_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell = _mopeft_cell(tmp_path, "isaid", [GATES])
    (cell.parent / "units/u0/eval/gates.npz").unlink()
    assert cli_main(["figure", "gate-frequency", "--cells", str(cell), "--out", str(tmp_path / "g")]) == 2
    assert "units/u0/eval/gates.npz" in capsys.readouterr().err
