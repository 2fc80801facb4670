"""Table 4.5: trainable parameters and train/inference time relative to full fine-tuning.

Why parsing is isolated in ``load_params`` / ``load_bench`` / ``load_flops``: their producers
(``mopeft params|bench|flops --json``) evolve independently; each loader accepts the documented key
variants and fails with the file name, so a schema change breaks in one obvious place.

Why two parameter percentages: the thesis's shares exclude the (always trained) mask decoder
(performance.md §7), so "% of SAM" for our full trainable set is not comparable with it. We report
both our total trainable share and the encoder-PEFT-only share, and take the difference to the study
from the encoder-PEFT share when the params JSON gives it.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mopeft.io import read_json
from mopeft.report import paper
from mopeft.report.provenance import collect_provenance
from mopeft.report.tables import METHOD_LABELS, MISSING, write_table

METHODS = ("full_ft", "decoder_ft", "lora", "vpt", "vpt_deep", "adapter", "mopeft")
TITLE = "Table 4.5: Trainable parameters and training/inference time relative to full fine-tuning"

_TRAINABLE_KEYS = ("trainable", "trainable_params", "trainable_parameters")
_TOTAL_KEYS = ("sam_reference_total", "total", "total_params", "total_parameters")
_ENCODER_KEYS = (
    "encoder_peft",
    "encoder_trainable",
    "encoder_peft_trainable",
    "image_encoder_trainable",
    "encoder_trainable_params",
)
_TRAIN_PCT_KEYS = ("train_pct", "train_time_pct", "t_train_pct")
_INFER_PCT_KEYS = ("infer_pct", "inference_pct", "inference_time_pct", "t_inference_pct")
_TRAIN_ABS_KEYS = ("train_ms", "train_s", "train_time", "train_step_ms", "train_time_s")
_INFER_ABS_KEYS = ("infer_ms", "infer_s", "inference_ms", "inference_time", "infer_time_s")
_GMAC_KEYS = ("image_encoder_gmac", "encoder_gmac", "gmac", "gmacs")


def _first(d: Mapping[str, Any], keys: Iterable[str]) -> Any:
    return next((d[k] for k in keys if k in d and d[k] is not None), None)


def _number(value: Any, path: Path, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {key} is not a number ({value!r})") from None


def load_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``mopeft params --json`` output -> {method, trainable, total, encoder_trainable (or None)}.

    Accepted keys: trainable | trainable_params; sam_reference_total (stock SAM, preferred as the
    denominator) | total | total_params; encoder PEFT count: encoder_peft | encoder_trainable |
    image_encoder_trainable, or a ``breakdown``/``trainable_by_role`` object whose keys other than
    decoder / prompt-encoder / gate entries are summed. ``method`` defaults to the file stem.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object from `mopeft params --json`")
    trainable, total = _first(data, _TRAINABLE_KEYS), _first(data, _TOTAL_KEYS)
    if trainable is None or total is None:
        raise ValueError(
            f"{path}: needs a trainable count ({'|'.join(_TRAINABLE_KEYS)}) "
            f"and a total ({'|'.join(_TOTAL_KEYS)})"
        )
    encoder = _first(data, _ENCODER_KEYS)
    if encoder is None:
        breakdown = data.get("breakdown") or data.get("trainable_by_role")
        if isinstance(breakdown, dict):
            skip = ("decoder", "prompt", "gate", "reparam")
            encoder = sum(float(v) for k, v in breakdown.items() if not any(s in k for s in skip))
    return {
        "method": str(data.get("method") or path.stem),
        "trainable": _number(trainable, path, "trainable"),
        "total": _number(total, path, "total"),
        "encoder_trainable": None if encoder is None else _number(encoder, path, "encoder_trainable"),
    }


def load_bench(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """``mopeft bench --json`` output -> {method: {"train_pct": .., "infer_pct": ..}} (% of full_ft).

    Accepts {"methods": {name: {...}}}, {"results": [...]}, or a list of records with "method".
    Percent keys: train_pct | train_time_pct, infer_pct | inference_pct | inference_time_pct; absolute
    times (train_ms, infer_ms, ...) are converted relative to full_ft when no percentage is given.
    """
    path = Path(path)
    data = read_json(path)
    records: dict[str, dict[str, Any]] = {}
    if isinstance(data, dict) and isinstance(data.get("methods"), dict):
        records = {str(k): v for k, v in data["methods"].items()}
    else:
        items = data.get("results") if isinstance(data, dict) else data
        if not isinstance(items, list) or not all(isinstance(r, dict) and "method" in r for r in items):
            raise ValueError(
                f"{path}: expected {{'methods': {{name: {{...}}}}}} or a list of records with 'method'"
            )
        records = {str(r["method"]): r for r in items}
    out: dict[str, dict[str, float]] = {}
    for kind, pct_keys, abs_keys in (
        ("train_pct", _TRAIN_PCT_KEYS, _TRAIN_ABS_KEYS),
        ("infer_pct", _INFER_PCT_KEYS, _INFER_ABS_KEYS),
    ):
        ref_abs = _first(records.get("full_ft", {}), abs_keys)
        for method, rec in records.items():
            if not isinstance(rec, dict):
                raise ValueError(f"{path}: entry for {method!r} is not an object")
            pct = _first(rec, pct_keys)
            if pct is None and ref_abs is not None and _first(rec, abs_keys) is not None:
                pct = 100.0 * _number(_first(rec, abs_keys), path, kind) / _number(ref_abs, path, kind)
            if pct is not None:
                out.setdefault(method, {})[kind] = _number(pct, path, kind)
    return out


def load_flops(path: str | os.PathLike[str]) -> tuple[str, float]:
    """``mopeft flops --json`` output -> (method, image-encoder GMAC per image)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object from `mopeft flops --json`")
    gmac = _first(data, _GMAC_KEYS)
    if gmac is None and data.get("macs") is not None:
        gmac = _number(data["macs"], path, "macs") / 1e9
    if gmac is None:
        raise ValueError(f"{path}: no image-encoder GMAC ({'|'.join(_GMAC_KEYS)} or macs)")
    return str(data.get("method") or path.stem), _number(gmac, path, "gmac")


def _r2(x: float | None) -> float:
    return math.nan if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 2)


def efficiency_table(
    params: Iterable[Mapping[str, Any]],
    bench: Mapping[str, Mapping[str, float]],
    flops: Mapping[str, float],
    directory: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """CSV frame, display frame and notes of Table 4.5 from parsed params/bench/flops."""
    ref = paper.efficiency(directory).set_index("method")
    by_method = {p["method"]: p for p in params}
    records, display = [], []
    for m in METHODS:
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

        comparable = pct_enc if not math.isnan(pct_enc) else pct_total
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
            "Method": METHOD_LABELS.get(m, m),
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
        "Percentages of parameters are of the stock SAM ViT-B (sam_reference_total when the params JSON "
        "gives it, else the model's total); times are % of full fine-tuning, measured by `mopeft bench`.",
        "The study's parameter shares exclude the mask decoder (performance.md §7): the difference to the "
        "study is taken from our encoder-PEFT-only share when available (the prefix counted as L×C per "
        "block, its reparametrisation MLP as training-only), else from our total trainable share.",
        "The study measured on FloodNet; timings depend on the device and image size of this run.",
        f"{MISSING}: no measurement (or none in the study: it prints '-' for decoder fine-tuning's "
        "parameters).",
    ]
    return pd.DataFrame.from_records(records), pd.DataFrame.from_records(display), notes


def build_4_5(args: argparse.Namespace) -> None:
    params = [load_params(p) for p in (args.params or [])]
    bench = load_bench(args.bench) if args.bench else {}
    flops = dict(load_flops(p) for p in (args.flops or []))
    df, display, notes = efficiency_table(params, bench, flops, getattr(args, "paper_dir", None))
    raw = [read_json(p) for p in (args.params or [])]
    if args.bench:
        bench_raw = read_json(args.bench)
        raw.append(bench_raw if isinstance(bench_raw, dict) else {})
    prov = collect_provenance(
        args.config,
        [{"weights": r.get("weights"), "synthetic": r.get("synthetic")} for r in raw if isinstance(r, dict)],
    )
    prov["weights"] = prov["weights"] if prov["weights"] != "n/a" else "not used (counts and timings)"
    write_table(df, args.out, TITLE, prov, notes, display=display)
