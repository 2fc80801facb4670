"""The tables' Markdown and notes: a user's dataset name cannot break a row, and a cell whose mIoU
left out a class (its IoU is None: no pixel of it in the split, none predicted) says so."""

from __future__ import annotations

import json
from pathlib import Path

from test_report_tables import TABLE_4_3, _cell

from mopeft.cli import main as cli_main
from mopeft.report.ablations import ablation_table
from mopeft.report.main_tables import main_table
from mopeft.report.tables import load_cells, md_cell


def _with(cell: Path, **fields: object) -> Path:
    data = json.loads(cell.read_text())
    data.update(fields)
    cell.write_text(json.dumps(data))
    return cell


def _gfm_cells(line: str) -> list[str]:
    """A pipe-table row split the way GitHub does: a backslash escapes the next character."""
    cells, cur, i = [], "", 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            cur += line[i : i + 2]
            i += 2
            continue
        if line[i] == "|":
            cells.append(cur)
            cur = ""
        else:
            cur += line[i]
        i += 1
    return [c.strip() for c in cells[1:]]  # the text before the first pipe is not a cell


def test_md_cell_escapes_what_would_end_or_split_a_row() -> None:
    assert md_cell("a|b") == "a\\|b"
    assert md_cell("two\nlines\r\nthree") == "two<br>lines<br>three"
    assert md_cell("ends in a backslash\\") == "ends in a backslash\\\\"
    assert md_cell("Dark Zurich †") == "Dark Zurich †"


def test_a_custom_name_with_a_pipe_and_a_newline_keeps_its_row(tmp_path: Path) -> None:
    name = "Leaves | v2\\\nsecond line"  # a pipe, a trailing backslash, a line break
    cells = [
        _cell(tmp_path, "kvasir_instrument", "mopeft", 70.0),
        _with(_cell(tmp_path, "leaves", "mopeft", 40.0), domain="Custom", name=name),
        _with(_cell(tmp_path, "leaves", "baseline", 30.0), domain="Custom", name=name),
    ]
    out = tmp_path / "t43"
    args = ["table", "4.3", "--cells", *map(str, cells), "--config", "c.yaml", "--out", str(out)]
    assert cli_main(args) == 0
    lines = out.with_suffix(".md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Domain"))
    end = lines.index("", start)
    table = lines[start:end]
    width = len(_gfm_cells(table[0]))
    assert all(len(_gfm_cells(line)) == width for line in table), table
    leaves = [line for line in table if "Leaves" in line]
    assert len(leaves) == 1 and _gfm_cells(leaves[0])[1] == "Leaves \\| v2\\\\<br>second line"
    # header, rule, 22 study rows, leaves, the means of Medical Imaging, Custom and all: no extra line
    assert len(table) == 2 + 22 + 1 + 3


def test_a_class_without_iou_is_named_in_the_notes(tmp_path: Path) -> None:
    """Dark Zurich's "train" has no IoU for both methods; "bus" only for the baseline (LoRA predicted
    it, so it scores 0 there): the two columns average different classes, and the note says so."""
    base = _with(
        _cell(tmp_path, "dark_zurich", "baseline", 5.0),
        name="Dark Zurich",
        per_class_iou={"road": 10.0, "train": None, "bus": None},
    )
    lora = _with(
        _cell(tmp_path, "dark_zurich", "lora", 6.0),
        name="Dark Zurich",
        per_class_iou={"road": 12.0, "train": None, "bus": 0.0},
    )
    kvasir = _with(_cell(tmp_path, "kvasir_instrument", "lora", 60.0), per_class_iou={"a": 1.0, "b": 2.0})
    _, _, notes, _ = main_table(load_cells([base, lora, kvasir]), ["baseline", "lora"])
    note = next(n for n in notes if n.startswith("No IoU for these classes"))
    assert "Dark Zurich (dark_zurich): train (all 2 columns); bus (Baseline)." in note
    assert "kvasir" not in note
    assert "columns of those rows average different sets of classes" in note
    # with every class scored, no such note
    _, _, notes, _ = main_table(load_cells([kvasir]), TABLE_4_3)
    assert not any(n.startswith("No IoU") for n in notes)


def test_ablation_tables_name_the_column_of_a_class_without_iou(tmp_path: Path) -> None:
    r16 = _with(
        _cell(
            tmp_path, "kvasir_instrument", "mopeft", 73.0, "r16", options={"r": 16, "length": 20, "dmid": 64}
        ),
        per_class_iou={"background": 90.0, "instrument": None},
    )
    _, _, notes, _ = ablation_table(load_cells([r16]), "r")
    assert "kvasir_instrument: instrument (r=16)." in " ".join(notes)


def test_markdown_table_reads_back_as_its_cells_with_numbers_right_aligned() -> None:
    """to_markdown (tabulate's pipe format): every row has the header's cell count, unescaping each
    cell gives back the displayed text, numeric columns are right-aligned, and columns are padded."""
    import math

    import pandas as pd

    from mopeft.report.tables import MISSING, to_markdown

    df = pd.DataFrame(
        {
            "Dataset": ["a | b", "Long\\name", "x"],
            "LoRA": [71.2, math.nan, 5.0],
            "Δ": ["+1.00", MISSING, "-0.50"],
        }
    )
    lines = to_markdown(df).splitlines()
    assert len(lines) == 2 + len(df)
    rows = [_gfm_cells(line) for line in lines]
    assert rows[0] == ["Dataset", "LoRA", "Δ"]
    assert [c.strip(":").strip("-") for c in rows[1]] == ["", "", ""]
    assert rows[1][0].startswith(":") and rows[1][1].endswith(":") and rows[1][2].endswith(":")
    shown = [[c.replace("\\|", "|").replace("\\\\", "\\") for c in r] for r in rows[2:]]
    assert shown == [["a | b", "71.20", "+1.00"], ["Long\\name", MISSING, MISSING], ["x", "5.00", "-0.50"]]
    assert len({len(line) for line in lines}) == 1  # padded to one width per column
    empty = to_markdown(df.iloc[:0]).splitlines()
    assert len(empty) == 2 and _gfm_cells(empty[0]) == ["Dataset", "LoRA", "Δ"]
