"""Tables 4.1 and 4.2: the MESS datasets as the study describes them, plus what we actually prepared.

Why the registry and not the paper CSVs: the study has no CSV for these tables; the facts it prints
live in each dataset's ``DatasetSpec``. The prepared ``meta.json`` files add what this run really
used (test images, classes, synthetic or real), so a demo on miniatures shows its own counts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mopeft.errors import InputError
from mopeft.io import read_json
from mopeft.report import paper
from mopeft.report.provenance import collect_provenance
from mopeft.report.registry import table_spec
from mopeft.report.tables import MISSING, write_table


def load_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A prepared dataset's meta.json; the dataset key falls back to the parent folder's name."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object (a prepared dataset's meta.json)")
    data = dict(data)
    data.setdefault("dataset", path.parent.name)
    return data


def prepared_test_count(meta: Mapping[str, Any]) -> str | None:
    """Test images in a meta.json's ``counts``: an int, or per task (PAXRay-4) "n ×k tasks" / "a/b/c"."""
    counts = meta.get("counts")
    if not isinstance(counts, dict):
        return None
    if isinstance(counts.get("test"), int | float):
        return str(int(counts["test"]))
    per_task = [
        int(v["test"]) for v in counts.values() if isinstance(v, dict) and isinstance(v.get("test"), int)
    ]
    if not per_task:
        return None
    if len(set(per_task)) == 1:
        return f"{per_task[0]} ×{len(per_task)} tasks" if len(per_task) > 1 else str(per_task[0])
    return "/".join(str(n) for n in per_task)


def _specs() -> tuple[list[Any], list[str]]:
    """Registered specs, and the keys whose module cannot be imported (reported, not fatal: the
    tables of the datasets that exist are still worth writing)."""
    from mopeft.data.registry import DATASETS, get_spec

    specs, unavailable = [], []
    for key in DATASETS:
        try:
            specs.append(get_spec(key))
        except ImportError:
            unavailable.append(key)
    return specs, unavailable


def _ordered_specs(specs: Iterable[Any], directory: Any = None) -> list[Any]:
    """MESS datasets in the study's order (FAIR-1M, the detection track, is not in these tables)."""
    order = paper.main_results(directory)["dataset"].tolist()
    by_key = {s.key: s for s in specs}
    return [by_key[k] for k in order if k in by_key]


def dataset_table(
    name: str,
    specs: Sequence[Any],
    metas: Iterable[Mapping[str, Any]] = (),
    directory: Any = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Frame (CSV and display alike) and notes of Table 4.1 (``name="4.1"``) or 4.2 (``"4.2"``)."""
    meta_by_key = {str(m["dataset"]): m for m in metas}
    records = []
    for s in _ordered_specs(specs, directory):
        meta = meta_by_key.get(s.key, {})
        row: dict[str, Any] = {"domain": s.domain, "dataset": s.key, "name": s.name}
        if name == "4.1":
            row |= {
                "sensor": s.sensor,
                "segment_size": s.segment_size,
                "num_classes": s.num_classes_label or str(s.num_classes),
                "class_similarity": s.class_similarity,
                "classes_ours": len(s.classes),
                "classes_prepared": meta.get("num_classes"),
            }
        else:
            row |= {
                "vocabulary": s.vocabulary,
                "test_images": s.expected_test,
                "task": s.task_description,
                "prepared_test_images": prepared_test_count(meta) if meta else None,
                "prepared_data": ("synthetic" if meta.get("synthetic") else "real") if meta else None,
            }
        records.append(row)
    notes = [
        "Facts as the study prints them come from each dataset's DatasetSpec (mopeft/data/datasets/); "
        "test_images is the MESS evaluation count (per task for PAXRay-4).",
        "prepared_* columns come from the prepared meta.json files of this run "
        f"({MISSING}: dataset not prepared in this run).",
    ]
    spec_notes = [f"{s.name}: {n}" for s in _ordered_specs(specs, directory) for n in s.notes]
    notes += spec_notes
    frame = pd.DataFrame.from_records(records)
    if "classes_prepared" in frame:
        frame["classes_prepared"] = frame["classes_prepared"].astype("Int64")  # not 20.00 beside blanks
    return frame, notes


def build(args: argparse.Namespace) -> None:
    """``mopeft table 4.1|4.2 --meta <meta.json>...``: dataset facts from the registry and meta.json."""
    name = args.name
    metas = [load_meta(p) for p in (args.meta or [])]
    specs, unavailable = _specs()
    df, notes = dataset_table(name, specs, metas, getattr(args, "paper_dir", None))
    if unavailable:
        notes.append(f"Dataset modules not importable (rows omitted): {', '.join(unavailable)}.")
    prov = collect_provenance(args.config, metas)
    prov["weights"] = "not used (dataset facts)"
    del prov["environments"]  # facts of the data, not of a run: no training or timing environment
    write_table(df, args.out, table_spec(name).title, prov, notes)
