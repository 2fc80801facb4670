"""Table 4.5: trainable parameters and train/inference time relative to full fine-tuning.

Why parsing is isolated in ``load_params`` / ``load_bench`` / ``load_flops``: each reads exactly
the keys its producer (``mopeft params|bench|flops --json``) writes and fails naming the file and
the key, so a change on either side breaks in one obvious place.

Why two parameter percentages: the thesis's shares exclude the (always trained) mask decoder
(docs/performance.md), so "% of SAM" for our full trainable set is not comparable with it. We report
both our total trainable share and the encoder-PEFT-only share, and take the difference to the study
from the encoder-PEFT share when the params JSON gives it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from mopeft.errors import InputError
from mopeft.io import read_json
from mopeft.methods.registry import is_peft_method
from mopeft.report import paper
from mopeft.report.main_tables import beyond_note, declared_peft_labels
from mopeft.report.provenance import collect_provenance, efficiency_data, environments
from mopeft.report.registry import table_spec
from mopeft.report.tables import BEYOND_MARK, METHOD_LABELS, MISSING, write_table

log = logging.getLogger(__name__)


def _number(data: Mapping[str, Any], key: str, path: Path) -> float:
    """``data[key]`` as a float; a missing or non-numeric key is an error naming the file and key."""
    if key not in data or data[key] is None:
        raise InputError(f"{path}: no {key!r} (is this the output of the right `mopeft` command?)")
    try:
        return float(data[key])
    except (TypeError, ValueError):
        raise InputError(f"{path}: {key} is not a number ({data[key]!r})") from None


def _object(path: Path, command: str) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected the JSON object `{command}` writes")
    return data


def load_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``mopeft params --json`` -> {method, trainable, total (the stock SAM), encoder_trainable}."""
    path = Path(path)
    data = _object(path, "mopeft params --json")
    return {
        "method": str(data.get("method") or path.stem),
        "trainable": _number(data, "trainable", path),
        "total": _number(data, "sam_reference_total", path),
        "encoder_trainable": _number(data, "encoder_peft", path),
        "method_options": dict(data.get("method_options") or {}),
    }


def load_bench(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """``mopeft bench --json`` -> {method: {"train_pct": .., "infer_pct": ..}} (% of full_ft)."""
    path = Path(path)
    data = _object(path, "mopeft bench --json")
    rows = data.get("results")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "method" in r for r in rows):
        raise InputError(f"{path}: no 'results' list of per-method records (`mopeft bench --json`)")
    return {str(r["method"]): {k: _number(r, k, path) for k in ("train_pct", "infer_pct")} for r in rows}


def load_flops(path: str | os.PathLike[str]) -> tuple[str, float]:
    """``mopeft flops --json`` -> (method, image-encoder GMAC per image)."""
    path = Path(path)
    data = _object(path, "mopeft flops --json")
    return str(data.get("method") or path.stem), _number(data, "image_encoder_gmac", path)


def _r2(x: float | None) -> float:
    return math.nan if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 2)


def efficiency_table(
    params: Iterable[Mapping[str, Any]],
    bench: Mapping[str, Mapping[str, float]],
    flops: Mapping[str, float],
    directory: Any = None,
    beyond: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """CSV frame, display frame and notes of Table 4.5 from parsed params/bench/flops. ``beyond``:
    label of each method beyond the study (config peft_methods; by name where not given), shown
    ``label§`` with a note saying what it is, as in Table 4.4."""
    ref = paper.efficiency(directory).set_index("method")
    params = list(params)
    by_method = {p["method"]: p for p in params}
    # Rows: the configured methods (efficiency.methods), in the order their files were given.
    methods = list(dict.fromkeys([p["method"] for p in params] + list(bench)))
    beyond_in = [m for m in methods if is_peft_method(m)]
    labels = {m: METHOD_LABELS.get(m, m) for m in methods}
    labels |= {m: f"{(beyond or {}).get(m, m)}{BEYOND_MARK}" for m in beyond_in}
    records, display = [], []
    for m in methods:
        p = by_method.get(m)
        pct_total = 100.0 * p["trainable"] / p["total"] if p else math.nan
        enc = p.get("encoder_trainable") if p else None
        pct_enc = 100.0 * enc / p["total"] if enc is not None else math.nan
        if m == "full_ft" and p:
            pct_enc = pct_total  # full FT trains the encoder itself: "encoder PEFT only" is the whole share
        b = bench.get(m, {})

        def paper_val(col: str, method: str = m) -> float:
            return (
                float(ref.at[method, col])
                if method in ref.index and not pd.isna(ref.at[method, col])
                else math.nan
            )

        comparable = pct_enc
        row = {
            "method": m,
            "params_pct": _r2(pct_total),
            "params_encoder_pct": _r2(pct_enc),
            "params_pct_paper": _r2(paper_val("trainable_params_pct")),
            "params_pct_diff": _r2(_r2(comparable) - paper_val("trainable_params_pct")),
            "train_time_pct": _r2(b.get("train_pct")),
            "train_time_pct_paper": _r2(paper_val("train_time_pct")),
            "train_time_pct_diff": _r2(_r2(b.get("train_pct")) - paper_val("train_time_pct")),
            "inference_time_pct": _r2(b.get("infer_pct")),
            "inference_time_pct_paper": _r2(paper_val("inference_time_pct")),
            "inference_time_pct_diff": _r2(_r2(b.get("infer_pct")) - paper_val("inference_time_pct")),
        }
        if flops:
            row["encoder_gmac"] = _r2(flops.get(m))
        records.append(row)

        def f(x: float, signed: bool = False, pct: bool = True) -> str:
            if math.isnan(x):
                return MISSING
            return (f"{x:+.2f}" if signed else f"{x:.2f}") + ("%" if pct and not signed else "")

        disp = {
            "Method": labels[m],
            "Params (% of SAM)": f(row["params_pct"]),
            "Params, encoder PEFT only": f(row["params_encoder_pct"]),
            "Params (paper)": f(row["params_pct_paper"]),
            "Params Δ": f(row["params_pct_diff"], signed=True),
            "T_train": f(row["train_time_pct"]),
            "T_train (paper)": f(row["train_time_pct_paper"]),
            "T_train Δ": f(row["train_time_pct_diff"], signed=True),
            "T_inference": f(row["inference_time_pct"]),
            "T_inference (paper)": f(row["inference_time_pct_paper"]),
            "T_inference Δ": f(row["inference_time_pct_diff"], signed=True),
        }
        if flops:
            disp["Encoder GMAC"] = f(row["encoder_gmac"], pct=False)
        display.append(disp)
    notes = [
        "Percentages of parameters are of the stock SAM ViT-B (93,735,472 parameters); times are % of "
        "full fine-tuning, measured by `mopeft bench`.",
        "The study's parameter shares exclude the mask decoder (docs/performance.md): the difference to the "
        "study is taken from our encoder-PEFT-only share (the prefix counted as L×C per block, its "
        "reparametrisation MLP as training-only).",
        "The study measured on FloodNet; timings depend on the device and image size of this run.",
        f"{MISSING}: no measurement (or none in the study: it prints '-' for decoder fine-tuning's "
        "parameters).",
    ]
    if beyond_in:
        # What each is, from the options its parameters were counted with (`mopeft params --json`).
        counted = [
            SimpleNamespace(method=m, options=(by_method.get(m) or {}).get("method_options")) for m in methods
        ]
        notes.insert(1, beyond_note(beyond_in, labels, counted))
    return pd.DataFrame.from_records(records), pd.DataFrame.from_records(display), notes


def _bench_paths(bench: Any) -> list[Path]:
    """``--bench``: one file (the pipeline's) or several (a list); none when not given."""
    if not bench:
        return []
    return [Path(p) for p in ([bench] if isinstance(bench, (str, os.PathLike)) else bench)]


def timing_device(raw: Mapping[str, Any]) -> str:
    """The device a ``bench.json``'s timings ran on: its environment's GPU model for a CUDA run,
    else the ``device_name`` `mopeft bench` records (the CPU); "unknown" for neither."""
    env = raw.get("environment")
    on_cpu = (raw.get("config") or {}).get("device") == "cpu"
    if isinstance(env, Mapping) and env.get("gpu_name") and not on_cpu:
        return str(env["gpu_name"])
    return str(raw.get("device_name") or "unknown")


def timing_notes(benches: Mapping[Path, Mapping[str, Any]]) -> list[str]:
    """The notes naming the timings' device; a loud mark (and a log warning) when the files were
    timed on more than one device model: times relative to full FT from two GPUs do not compare,
    and refusing would block the whole report, so the table says it instead."""
    devices: dict[str, list[str]] = {}
    for path, raw in benches.items():
        devices.setdefault(timing_device(raw), []).append(path.name)
    if not devices:
        return []
    if len(devices) == 1:
        return [f"Timings measured on: {next(iter(devices))}."]
    listed = "; ".join(f"{d} ({', '.join(files)})" for d, files in devices.items())
    log.warning("Table 4.5: timings from %d different devices: %s", len(devices), listed)
    return [
        f"WARNING: MIXED DEVICES — the timings come from {len(devices)} different device models: {listed}. "
        "Times are % of full FT measured on the same device; rows from different devices do not compare."
    ]


def build_4_5(args: argparse.Namespace) -> None:
    params = [load_params(p) for p in (args.params or [])]
    bench_paths = _bench_paths(args.bench)
    bench: dict[str, dict[str, float]] = {}
    for p in bench_paths:  # several files: a later file's row for a method replaces an earlier one
        bench |= load_bench(p)
    flops = dict(load_flops(p) for p in (args.flops or []))
    methods = [p["method"] for p in params] + list(bench)
    labels = peft_labels(args.config, methods)
    df, display, notes = efficiency_table(params, bench, flops, getattr(args, "paper_dir", None), labels)
    raw = [read_json(p) for p in (args.params or [])]
    bench_raw = {p: read_json(p) for p in bench_paths}
    bench_raw = {p: r if isinstance(r, dict) else {} for p, r in bench_raw.items()}
    raw += list(bench_raw.values())
    prov = collect_provenance(
        args.config,
        [{"weights": r.get("weights"), "synthetic": r.get("synthetic")} for r in raw if isinstance(r, dict)],
    )
    # Parameter and FLOP counts do not depend on the machine: the environments are the timings'.
    prov["environments"] = environments(bench_raw.values())
    prov["weights"] = prov["weights"] if prov["weights"] != "n/a" else "not used (counts and timings)"
    prov["data"] = efficiency_data(args.config, [r for r in raw if isinstance(r, dict)])
    notes = notes + full_ft_note(raw) + timing_notes(bench_raw)
    write_table(df, args.out, table_spec("4.5").title, prov, notes, display=display)


def peft_labels(config: str | os.PathLike[str] | None, methods: Iterable[str]) -> dict[str, str]:
    """Label of each peft method among ``methods``: its ``label`` in the run config's peft_methods
    (Table 4.4's source, mopeft.report.main_tables.declared_peft_labels), else its name."""
    wanted = [m for m in methods if is_peft_method(m)]
    declared = declared_peft_labels(config)[0] if wanted else {}
    return {m: declared.get(m, m) for m in wanted}


def full_ft_note(params_raw: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why full fine-tuning's share is below 100 % (e.g. 99.41 % for ViT-B), from its params JSON.

    The share is of the STOCK SAM, and our model is not quite that: the K-class decoder drops SAM's
    IoU head, three of its four hypernetwork MLPs and its mask tokens (and adds one token per
    class), and the prompt encoder stays frozen even under full FT.
    """
    p = next((r for r in params_raw if isinstance(r, dict) and r.get("method") == "full_ft"), None)
    keys = ("trainable", "sam_reference_total", "total", "encoder_full", "decoder_trainable")
    if p is None or any(not isinstance(p.get(k), int) for k in keys):
        return []
    trainable, ref, total = p["trainable"], p["sam_reference_total"], p["total"]
    return [
        f"Full FT's {100 * trainable / ref:.2f}% is of the stock SAM ({p.get('arch', '?')}, {ref:,} "
        "parameters): "
        f"full FT trains the image encoder ({p['encoder_full']:,}) and our K-class mask decoder "
        f"({p['decoder_trainable']:,}), {trainable:,} in all. It is below 100% because our model has "
        f"{ref - total:,} fewer parameters than the stock SAM (the semantic decoder drops SAM's IoU head, "
        f"three of its four hypernetwork MLPs and its mask tokens, and adds one token per class) and the "
        f"prompt encoder ({total - trainable:,}) stays frozen; the study's 100% is full FT by definition."
    ]
