"""Bootstrap intervals for a cell's mIoU, and paired bootstrap differences between two cells.

Why images are the resampling unit: MESS's mIoU is a ratio of sums over the test images
(Σtp / (Σtp+Σfp+Σfn) per class, then the mean over defined classes), and pixels of one image are
not independent, so the test set's sampling error is the error of a sample of *images*. Every
evaluation keeps per image and class the (tp, fp, fn) counts (``per_image.npz``), enough to rebuild
the dataset-level statistic of any multiset of images; a resample is a weight per image (how often
it was drawn) and its summed counts are ``weights @ counts``.

How a cell's units and seeds enter (docs/uncertainty.md says the same in prose):

* ``single``: the unit's images are resampled.
* ``pool`` (k folds of a train-less dataset): the folds' images together are ONE test set (each in
  exactly one fold; the cell's confusion is the folds' sum), so their counts are concatenated and
  resampled as one set.
* ``mean`` (PAXRay-4): the tasks are the same X-ray images with different labels, so one draw of
  image indices is applied to every task and the replicate is the plain mean of the tasks' mIoUs.
  Tasks whose image names differ are resampled independently (one stratum each).
* seeds: several runs of a cell are tested on the same images. A replicate draws the images once,
  draws S seeds with replacement from the S runs, and averages the drawn runs' mIoUs under that one
  image draw (a two-level bootstrap: seeds, then images shared by all seeds). The point estimate is
  the mean of the runs' mIoUs, the number the tables print. One seed reduces it to the plain bootstrap.

Intervals are percentile intervals of the replicates; ``seed`` seeds numpy's default generator, so a
result is reproducible from (inputs, n_resamples, seed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mopeft.errors import InputError, MissingInput
from mopeft.io import read_json

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
# metrics.json and the counts are computed from the same integers; any difference means stale files.
_TOLERANCE = 1e-9
_MAX_WEIGHTS = 4_000_000  # entries of one (resamples x images) weight block


# ------------------------------------------------------------------------------------ the statistic
def tp_fp_fn(matrix: np.ndarray) -> np.ndarray:
    """(K, 3) per-class (tp, fp, fn) of one (K+1)x(K+1) confusion matrix (rows pred, cols GT).

    Same definitions as ``ConfusionMatrix.compute``: fp counts predictions of c on valid GT of another
    class; fn counts every valid GT pixel of c not predicted c, "no class" (row K) included.
    """
    m = np.asarray(matrix, dtype=np.int64)
    k = m.shape[0] - 1
    tp = np.diag(m)[:k]
    return np.stack([tp, m[:k, :k].sum(axis=1) - tp, m.sum(axis=0)[:k] - tp], axis=1)


def miou_from_counts(counts: np.ndarray) -> float:
    """MESS mIoU in percent of (…, K, 3) (tp, fp, fn) counts summed over the leading axes.

    A class with tp+fp+fn = 0 (absent from GT and prediction) is skipped; NaN if none is defined.
    Computed exactly as ``ConfusionMatrix.compute`` does, so all images reproduce metrics.json.
    """
    c = np.asarray(counts, dtype=np.int64)
    c = c.reshape(-1, *c.shape[-2:]).sum(axis=0).astype(np.float64)
    tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
    pos_gt, pos_pred = tp + fn, tp + fp
    valid = (pos_gt + pos_pred) > 0
    if not valid.any():
        return float("nan")
    iou = tp[valid] / (pos_gt + pos_pred - tp)[valid]
    return 100 * float(iou.mean())


def _miou_rows(sums: np.ndarray) -> np.ndarray:
    """mIoU (percent) of each row of (B, K, 3) summed counts; NaN where no class is defined."""
    tp, fp, fn = sums[..., 0], sums[..., 1], sums[..., 2]
    denom = tp + fp + fn
    valid = denom > 0
    iou = np.where(valid, tp / np.where(valid, denom, 1.0), 0.0)
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100 * iou.sum(axis=1) / n


# ------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class Stratum:
    """Images resampled by one draw, and the count arrays (one per averaged part) it applies to."""

    images: np.ndarray  # (N,) names, sorted
    parts: tuple[np.ndarray, ...]  # each (N, K, 3) int64, rows aligned with ``images``


@dataclass(frozen=True)
class Run:
    """One run (one seed) of a cell: its strata; its mIoU is the mean over all parts' mIoUs."""

    source: Path
    strata: tuple[Stratum, ...]

    @property
    def point(self) -> float:
        mious = [miou_from_counts(p) for s in self.strata for p in s.parts]
        return mious[0] if len(mious) == 1 else float(np.mean(mious))

    @property
    def n_images(self) -> int:
        return sum(len(s.images) for s in self.strata)


def _sorted(images: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(images, kind="stable")
    return images[order], counts[order]


def run_from_arrays(images: Sequence[str] | np.ndarray, counts: np.ndarray, source: str | Path) -> Run:
    """A single-unit run from names and (N, K, 3) counts (what ``mopeft score`` collects)."""
    images, counts = _check_counts(np.asarray(images).astype(str), np.asarray(counts), Path(source))
    images, counts = _sorted(images, counts)
    return Run(Path(source), (Stratum(images, (counts,)),))


def _check_counts(images: np.ndarray, counts: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if counts.ndim != 3 or counts.shape[2] != 3 or counts.dtype.kind not in "iu":
        raise InputError(f"{path}: 'counts' must be (N, K, 3) integers, got {counts.shape} {counts.dtype}")
    if images.shape != (counts.shape[0],):
        raise InputError(f"{path}: {images.size} image names for {counts.shape[0]} count rows")
    if counts.shape[0] == 0:
        raise InputError(f"{path}: no test images; nothing to resample")
    if (counts < 0).any():
        raise InputError(f"{path}: negative counts; re-run `mopeft evaluate`")
    names, seen = np.unique(images, return_counts=True)
    if (seen > 1).any():
        raise InputError(f"{path}: image {names[seen > 1][0]!r} appears {seen.max()} times")
    return images, counts.astype(np.int64)


def load_per_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(names, (N, K, 3) counts) of a ``per_image.npz`` written by ``mopeft evaluate``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            images, counts = data["images"].astype(str), data["counts"]
    except FileNotFoundError:
        raise MissingInput(
            f"{path}: file not found; re-run `mopeft evaluate` (older evaluations did not write it)"
        ) from None
    except KeyError as exc:
        # numpy's KeyError says which array is absent ("counts is not a file in the archive").
        missing = exc.args[0] if exc.args else exc
        raise InputError(f"{path}: {missing}; expected arrays 'images' and 'counts'") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable per-image .npz ({exc})") from None
    return _check_counts(images, counts, path)


def _check_point(computed: float, recorded: Any, where: Path) -> None:
    if not math.isclose(computed, float(recorded), rel_tol=0, abs_tol=_TOLERANCE):
        raise InputError(
            f"{where}: mIoU {recorded} disagrees with {computed!r} from the per-image counts; the "
            "files come from different evaluations (re-run `mopeft evaluate` and `mopeft combine`)"
        )


def _load_unit(eval_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    images, counts = load_per_image(eval_dir / "per_image.npz")
    metrics_path = eval_dir / "metrics.json"
    _check_point(miou_from_counts(counts), read_json(metrics_path)["miou"], metrics_path)
    return _sorted(images, counts)


def _tasks(units: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[Stratum, ...]:
    """PAXRay-4: one joint stratum when every task has the same images, else one per task."""
    (first, *rest) = units.values()
    if all(np.array_equal(first[0], names) for names, _ in rest):
        return (Stratum(first[0], tuple(c for _, c in units.values())),)
    return tuple(Stratum(names, (counts,)) for names, counts in units.values())


def _folds(units: dict[str, tuple[np.ndarray, np.ndarray]], cell_dir: Path) -> Stratum:
    """k folds: one test set, every image in exactly one fold."""
    owner: dict[str, str] = {}
    for unit, (names, _) in units.items():
        for name in names:
            if name in owner:
                raise InputError(
                    f"{cell_dir / 'units' / unit / 'eval' / 'per_image.npz'}: image {name!r} is also in "
                    f"fold {owner[name]!r}; each test image must be in exactly one fold"
                )
            owner[name] = unit
    images = np.concatenate([n for n, _ in units.values()])
    counts = np.concatenate([c for _, c in units.values()])
    images, counts = _sorted(images, counts)
    return Stratum(images, (counts,))


def load_run(path: str | os.PathLike[str]) -> Run:
    """One run from a cell folder (``.../seed<k>/``) or its ``metrics.json``, a unit's ``eval``
    folder, or a bare ``per_image.npz``.

    A cell's units are read from ``units/<unit>/eval/`` and combined by its metrics.json's
    ``combine`` rule; each unit's and the cell's recorded mIoU must equal the counts' (else the
    files are stale and the error says which).
    """
    path = Path(path)
    if path.suffix == ".npz":
        images, counts = load_per_image(path)
        return run_from_arrays(images, counts, path)
    folder = path.parent if path.name == "metrics.json" else path
    if (folder / "per_image.npz").is_file():  # a unit's own eval folder
        images, counts = _load_unit(folder)
        return Run(folder, (Stratum(images, (counts,)),))
    metrics_path = folder / "metrics.json"
    metrics = read_json(metrics_path)
    rule, names = metrics.get("combine"), sorted(metrics.get("units") or {})
    if rule not in ("single", "mean", "pool") or not names:
        raise InputError(
            f"{metrics_path}: no 'combine' rule and 'units'; expected a cell metrics.json written by "
            "`mopeft combine` (or a unit eval folder)"
        )
    units = {u: _load_unit(folder / "units" / u / "eval") for u in names}
    if rule == "mean":
        strata = _tasks(units)
    elif rule == "pool":
        strata = (_folds(units, folder),)
    else:
        ((images, counts),) = units.values()
        strata = (Stratum(images, (counts,)),)
    run = Run(folder, strata)
    _check_point(run.point, metrics["miou"], metrics_path)
    return run


def _same_images(a: Run, b: Run) -> None:
    """Runs compared under one draw must hold the same images in the same strata."""
    if len(a.strata) != len(b.strata):
        raise InputError(
            f"{b.source}: {len(b.strata)} independently resampled image set(s), {a.source} has "
            f"{len(a.strata)}; they are not evaluations of the same test images"
        )
    for sa, sb in zip(a.strata, b.strata, strict=True):
        if not np.array_equal(sa.images, sb.images):
            only_a = sorted(set(sa.images) - set(sb.images))[:3]
            only_b = sorted(set(sb.images) - set(sa.images))[:3]
            raise InputError(
                f"{b.source}: test images differ from {a.source} ({len(sb.images)} vs "
                f"{len(sa.images)}; only in the first: {only_a}, only in the second: {only_b}); "
                "compare evaluations of the same test set"
            )
        for pa, pb in zip(sa.parts, sb.parts, strict=False):
            if pa.shape[1] != pb.shape[1]:
                raise InputError(f"{b.source}: {pb.shape[1]} classes, {a.source} has {pa.shape[1]}")


def load_cell_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Run]:
    """The runs (seeds) of one cell, checked to be evaluations of the same test images."""
    if not paths:
        raise ValueError("a cell needs at least one run folder (e.g. .../seed0)")
    runs = [load_run(p) for p in paths]
    for run in runs[1:]:
        _same_images(runs[0], run)
    return runs


# ------------------------------------------------------------------------------------ resampling
def _weights(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """(b, n) multiplicities of n images drawn n times with replacement, b times."""
    idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _run_replicates(run: Run, weights: list[np.ndarray]) -> np.ndarray:
    """(b,) mIoU of ``run`` under one weight block per stratum (mean over its parts)."""
    rows = []
    for stratum, w in zip(run.strata, weights, strict=True):
        for part in stratum.parts:
            sums = w @ part.reshape(part.shape[0], -1).astype(np.float64)
            rows.append(_miou_rows(sums.reshape(w.shape[0], *part.shape[1:])))
    return rows[0] if len(rows) == 1 else np.mean(rows, axis=0)


def _replicates(cells: Sequence[Sequence[Run]], n_resamples: int, seed: int) -> list[np.ndarray]:
    """Replicates of every cell under the SAME image draws; seeds drawn independently per cell."""
    if n_resamples < 2:
        raise InputError(f"the bootstrap needs at least 2 resamples (--resamples), got {n_resamples}")
    rng = np.random.default_rng(seed)
    sizes = [len(s.images) for s in cells[0][0].strata]
    block = max(1, min(n_resamples, _MAX_WEIGHTS // sum(sizes)))
    out = [np.empty(n_resamples) for _ in cells]
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        weights = [_weights(rng, n, b) for n in sizes]
        for runs, reps in zip(cells, out, strict=True):
            per_run = np.stack([_run_replicates(r, weights) for r in runs])  # (S, b)
            if len(runs) == 1:
                reps[start : start + b] = per_run[0]
            else:
                pick = rng.integers(0, len(runs), size=(b, len(runs)))
                reps[start : start + b] = per_run[pick, np.arange(b)[:, None]].mean(axis=1)
    return out


def _summary(reps: np.ndarray, confidence: float) -> dict[str, Any]:
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1) (--confidence), got {confidence}")
    ok = reps[~np.isnan(reps)]
    low, high = np.quantile(ok, [(1 - confidence) / 2, (1 + confidence) / 2]) if ok.size else (math.nan,) * 2
    return {
        "low": float(low),
        "high": float(high),
        "std": float(ok.std(ddof=1)) if ok.size > 1 else math.nan,
        "confidence": confidence,
        "n_undefined": int(reps.size - ok.size),  # resamples in which no class occurs (dropped)
    }


def _scheme(n_seeds: Sequence[int]) -> str:
    text = "percentile bootstrap over test images"
    if any(n > 1 for n in n_seeds):
        text += "; seeds resampled with replacement, one image draw shared by all seeds"
    return text


def cell_interval(
    runs: Sequence[Run],
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile bootstrap interval of a cell's mIoU (percent) over its runs (seeds).

    ``point`` is the mean of the runs' mIoUs; ``std`` the replicates' standard deviation.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("cell_interval needs at least one run")
    for run in runs[1:]:
        _same_images(runs[0], run)
    (reps,) = _replicates([runs], n_resamples, seed)
    return {
        "point": float(np.mean([r.point for r in runs])),
        **_summary(reps, confidence),
        "n_images": runs[0].n_images,
        "n_resamples": n_resamples,
        "n_seeds": len(runs),
        "seed": seed,
        "method": _scheme([len(runs)]),
    }


def paired_difference(
    runs_a: Sequence[Run],
    runs_b: Sequence[Run],
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of mIoU(a) − mIoU(b) in points over the SAME test images.

    Each replicate applies one image draw to both cells, so what the images have in common (hard or
    easy ones) cancels; ``excludes_zero`` says whether the interval lies entirely on one side of 0.
    """
    runs_a, runs_b = list(runs_a), list(runs_b)
    if not runs_a or not runs_b:
        raise ValueError("paired_difference needs at least one run on each side")
    for run in [*runs_a[1:], *runs_b]:
        _same_images(runs_a[0], run)
    reps_a, reps_b = _replicates([runs_a, runs_b], n_resamples, seed)
    point_a = float(np.mean([r.point for r in runs_a]))
    point_b = float(np.mean([r.point for r in runs_b]))
    summary = _summary(reps_a - reps_b, confidence)
    return {
        "diff": point_a - point_b,
        **summary,
        "excludes_zero": bool(summary["low"] > 0 or summary["high"] < 0),
        "point_a": point_a,
        "point_b": point_b,
        "n_images": runs_a[0].n_images,
        "n_resamples": n_resamples,
        "n_seeds_a": len(runs_a),
        "n_seeds_b": len(runs_b),
        "seed": seed,
        "method": "paired " + _scheme([len(runs_a), len(runs_b)]),
    }
