"""``mopeft datasets``: what the registry knows about every dataset (the pipeline reads --json)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from mopeft.data.registry import DATASETS, get_spec
from mopeft.data.spec import DatasetSpec
from mopeft.errors import InputError

HELP = "list the registered datasets (classes, sources, counts, table facts)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--dataset", action="append", help="only these keys (repeatable)")


def describe(spec: DatasetSpec) -> dict:
    """Everything a rule or a table needs, as plain JSON types."""
    return {
        "key": spec.key,
        "name": spec.name,
        "domain": spec.domain,
        "classes": list(spec.classes),
        "num_classes": spec.num_classes,
        "expected_test": spec.expected_test,
        "expected_test_is_exact": spec.expected_test_is_exact,
        "mess_key": spec.mess_key,
        "ignore_index": 255,
        "sources": [
            {
                "kind": s.kind,
                "filename": s.filename,
                "url": s.url,
                "checksum": {k: v for k, v in (("sha256", s.sha256), ("md5", s.md5)) if v},
                **({"gdrive_id": s.gdrive_id} if s.gdrive_id else {}),
                **({"git_ref": s.git_ref} if s.git_ref else {}),
                **({"instructions": s.instructions} if s.instructions else {}),
                "required": s.required,
            }
            for s in spec.sources
        ],
        "channels": spec.channels,
        "train_split": spec.train_split,
        "tasks": list(spec.tasks),
        "table": {
            f.name: getattr(spec, f.name)
            for f in dataclasses.fields(spec)
            if f.name
            in (
                "sensor",
                "segment_size",
                "class_similarity",
                "vocabulary",
                "task_description",
                "num_classes_label",
            )
        },
        "citation": spec.citation,
        "notes": list(spec.notes),
    }


def run(args: argparse.Namespace) -> int:
    keys = args.dataset or list(DATASETS)
    for key in keys:
        if key not in DATASETS:
            raise InputError(f"unknown dataset {key!r}; known: {', '.join(DATASETS)}")
    rows = [describe(get_spec(k)) for k in keys]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["key"]) for r in rows)
    for r in rows:
        kinds = ",".join(sorted({s["kind"] for s in r["sources"]}))
        print(
            f"{r['key']:<{width}}  {r['domain']:<24} K={r['num_classes']:<4} test={r['expected_test']:<5} "
            f"train={r['train_split']:<8} {kinds:<12} {r['name']}"
        )
    return 0
