"""Bootstrap intervals of mIoU: the statistic, the draw against exact enumeration, coverage, the
paired difference, and how PAXRay-4 tasks, k folds and seeds are combined."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import combine_args

from mopeft.cli import main
from mopeft.evaluation.bootstrap import (
    Run,
    Stratum,
    cell_interval,
    load_cell_runs,
    load_run,
    miou_from_counts,
    paired_difference,
    run_from_arrays,
    tp_fp_fn,
)
from mopeft.evaluation.metrics import ConfusionMatrix
from mopeft.io import write_json

PAXRAY_TASKS = ["bones", "diaphragm", "lungs", "mediastinum"]

# (tp, fp, fn) of 3 classes in 4 images; image 3 has no class-0 pixel at all (class skipped there).
HAND = np.array(
    [
        [[30, 5, 2], [10, 2, 5], [0, 1, 0]],
        [[12, 3, 8], [25, 4, 1], [4, 2, 3]],
        [[5, 9, 1], [3, 6, 4], [9, 0, 2]],
        [[0, 0, 0], [14, 1, 9], [2, 7, 1]],
    ]
)



# ------------------------------------------------------------------------------------------ helpers
def random_images(
    rng: np.random.Generator, n: int, k: int, size=(5, 6)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pred, gt) pairs with ignored GT pixels and "no class" (K) predictions."""
    out = []
    for _ in range(n):
        gt = rng.choice([*range(k), 255], size=size)
        pred = rng.choice(k + 1, size=size, p=[*([0.9 / k] * k), 0.1])
        out.append((pred, gt))
    return out


def write_unit(
    cell: Path, unit: str, images: list[tuple[np.ndarray, np.ndarray]], names: list[str], k: int
) -> Path:
    """A unit's eval folder as `mopeft evaluate` writes it (metrics, confusion, per_image, gates)."""
    d = cell / "units" / unit / "eval"
    d.mkdir(parents=True)
    cm, counts = ConfusionMatrix(k), []
    for pred, gt in images:
        one = ConfusionMatrix(k)
        one.update(pred, gt)
        cm.add(one)
        counts.append(tp_fp_fn(one.matrix))
    res = cm.compute()
    classes = [f"c{i}" for i in range(k)]
    res.update(unit=unit, num_images=len(images), classes=classes,
               per_class_iou=dict(zip(classes, res["per_class_iou"], strict=True)))  # fmt: skip
    cm.save(d / "confusion.npy")
    np.savez(d / "per_image.npz", images=np.array(names), counts=np.stack(counts))
    np.savez(d / "gates.npz")
    write_json(d / "metrics.json", res)
    return d


def combine(tmp_path: Path, cell: Path, units: list[Path], k: int, **meta) -> dict:
    meta_path = tmp_path / "meta" / cell.parent.name / "meta.json"
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(meta_path, {"dataset": "ds", "classes": [f"c{i}" for i in range(k)], "tasks": [],
                           "train_split": "official", **meta})  # fmt: skip
    assert main(combine_args(units, meta_path, cell / "metrics.json")) == 0
    return json.loads((cell / "metrics.json").read_text())


def exact_quantile(values: np.ndarray, q: float, n_resamples: int) -> float:
    """The q-quantile of an equally weighted discrete distribution, with a check that a sample of
    ``n_resamples`` lands on the same atom (q is > 5 Monte-Carlo sd from either side of the jump)."""
    atoms, inverse = np.unique(np.round(values, 9), return_inverse=True)
    cdf = np.cumsum(np.bincount(inverse)) / values.size
    i = int(np.searchsorted(cdf, q))
    sd = np.sqrt(q * (1 - q) / n_resamples)
    below = cdf[i - 1] if i else 0.0
    assert below < q - 5 * sd and cdf[i] > q + 5 * sd, "example too close to a jump of the CDF"
    return float(values[np.round(values, 9) == atoms[i]][0])


# ---------------------------------------------------------------------------------- the statistic
def test_miou_from_counts_is_the_confusion_matrix_miou_of_any_subset():
    rng = np.random.default_rng(0)
    images = random_images(rng, 6, 4)
    counts = []
    for pred, gt in images:
        one = ConfusionMatrix(4)
        one.update(pred, gt)
        counts.append(tp_fp_fn(one.matrix))
    counts = np.stack(counts)
    for subset in ([0, 1, 2, 3, 4, 5], [2], [1, 1, 4], [5, 0]):
        cm = ConfusionMatrix(4)
        for i in subset:
            cm.update(*images[i])
        assert miou_from_counts(counts[subset]) == cm.compute()["miou"]  # exactly, not approximately
    # a class absent from GT and prediction is skipped, one only predicted scores 0
    assert miou_from_counts(np.array([[[3, 1, 0], [0, 0, 0]]])) == 75.0
    assert miou_from_counts(np.array([[[3, 1, 0], [0, 2, 0]]])) == 37.5
    assert np.isnan(miou_from_counts(np.zeros((2, 3, 3), dtype=np.int64)))


def test_real_evaluate_output_of_the_tiny_model_is_reproduced(tmp_path):
    """`mopeft evaluate` (tiny SAM) on a 2-fold dataset, then `mopeft combine`: the counts give the
    units' and the pooled cell's metrics.json mIoU exactly."""
    import torch
    from conftest import write_blocky_dataset

    from mopeft.evaluation.evaluate import evaluate_unit
    from mopeft.methods.build import build_model
    from mopeft.model.weights import TINY_ASSET, TINY_SHA256

    ds = write_blocky_dataset(tmp_path / "prepared", n_test=5, train_split="none")
    torch.manual_seed(0)
    model = build_model("tiny", 3, "lora", {}, checkpoint=TINY_ASSET, checkpoint_sha256=TINY_SHA256)
    cell = tmp_path / "results/demo/cells/toy/lora/default/seed0"
    units = []
    for unit in ("fold0", "fold1"):
        units.append(cell / "units" / unit / "eval")
        res = evaluate_unit(model, ds, unit, units[-1], device="cpu", context={"method": "lora", "seed": 0})
        data = np.load(units[-1] / "per_image.npz")
        assert miou_from_counts(data["counts"]) == res["miou"]
    assert main(combine_args(units, ds / "meta.json", cell / "metrics.json")) == 0
    recorded = json.loads((cell / "metrics.json").read_text())
    run = load_run(cell)
    assert recorded["combine"] == "pool" and run.n_images == 5 and len(run.strata) == 1
    assert run.point == recorded["miou"]
    ci = cell_interval([run], n_resamples=200)
    assert ci["point"] == recorded["miou"] and ci["low"] <= ci["point"] <= ci["high"]


# --------------------------------------------------------------------------- the draw, exactly
def test_interval_of_a_hand_example_matches_exact_enumeration():
    """All 4^4 = 256 equally likely resamples of 4 images enumerated: the sampled percentile interval
    sits on the exact quantiles, and mean, sd and CDF agree within Monte-Carlo error."""
    n, b = len(HAND), 50_000
    exact = np.array([miou_from_counts(HAND[list(s)]) for s in itertools.product(range(n), repeat=n)])
    run = run_from_arrays(["a", "b", "c", "d"], HAND, "hand")
    ci = cell_interval([run], n_resamples=b, seed=1)
    assert ci["point"] == miou_from_counts(HAND)
    assert ci["low"] == pytest.approx(exact_quantile(exact, 0.025, b), abs=1e-9)
    assert ci["high"] == pytest.approx(exact_quantile(exact, 0.975, b), abs=1e-9)
    assert ci["std"] == pytest.approx(exact.std(), rel=0.03)
    # the whole distribution: the sampled CDF at every atom is within 5 sd of the exact one
    from mopeft.evaluation.bootstrap import _replicates

    (reps,) = _replicates([[run]], b, seed=1)
    assert reps.mean() == pytest.approx(exact.mean(), abs=5 * exact.std() / np.sqrt(b))
    for x in np.unique(exact):
        p = (exact <= x + 1e-9).mean()
        assert abs((reps <= x + 1e-9).mean() - p) <= 5 * np.sqrt(p * (1 - p) / b) + 1e-12
    assert (ci["low"], ci["high"], ci["n_images"], ci["n_resamples"]) == (
        pytest.approx(43.886743886743886), pytest.approx(63.39285714285715), 4, b)  # fmt: skip


def test_two_seed_scheme_matches_exact_enumeration():
    """Seeds then images: 2^2 seed draws x 3^3 image draws = 108 equally likely replicates, each the
    mean of the drawn seeds' mIoUs under ONE image draw."""
    a, b_ = HAND[:3], HAND[:3] + np.array([3, 0, 0])  # two "seeds" on the same 3 images
    b = 50_000
    exact = np.array([
        np.mean([miou_from_counts((a, b_)[s][list(d)]) for s in seeds])
        for seeds in itertools.product(range(2), repeat=2)
        for d in itertools.product(range(3), repeat=3)
    ])  # fmt: skip
    runs = [run_from_arrays(["x", "y", "z"], c, f"seed{i}") for i, c in enumerate((a, b_))]
    ci = cell_interval(runs, n_resamples=b, seed=2)
    assert ci["point"] == pytest.approx((miou_from_counts(a) + miou_from_counts(b_)) / 2)
    assert ci["n_seeds"] == 2 and "seeds resampled" in ci["method"]
    assert ci["low"] == pytest.approx(exact_quantile(exact, 0.025, b), abs=1e-9)
    assert ci["high"] == pytest.approx(exact_quantile(exact, 0.975, b), abs=1e-9)
    assert ci["std"] == pytest.approx(exact.std(), rel=0.03)


def test_same_seed_same_interval_other_seed_other_draws():
    run = run_from_arrays(["a", "b", "c", "d"], HAND, "hand")
    first, again, other = (cell_interval([run], 300, seed=s) for s in (5, 5, 6))
    assert first == again and first["seed"] == 5
    assert (first["low"], first["high"], first["std"]) != (other["low"], other["high"], other["std"])


# ------------------------------------------------------------------------------------- coverage
def test_coverage_on_a_synthetic_population_with_known_miou():
    """Images drawn from a population with known per-class rates: the 95 % interval of a 60-image
    test set contains the population mIoU in 90–99 % of 300 seeded repetitions."""
    rng = np.random.default_rng(123)
    k, n, reps, b = 4, 60, 300, 400
    presence = np.array([1.0, 0.8, 0.5, 0.3])  # how often a class occurs in an image
    quality = np.array([0.9, 0.7, 0.5, 0.3])  # mean fraction of a present class's pixels found

    def draw(m: int) -> np.ndarray:
        """(m, K, 3) counts: per image a size, present classes, a per-image difficulty."""
        size = rng.integers(50, 400, size=(m, k)) * (rng.random((m, k)) < presence)
        q = np.clip(quality + rng.normal(0, 0.15, size=(m, 1)), 0.02, 0.98)  # hard/easy images
        tp = rng.binomial(size, q)
        fn = size - tp
        fp = rng.binomial(rng.integers(0, 80, size=(m, k)), 0.5)
        return np.stack([tp, fp, fn], axis=-1)

    truth = miou_from_counts(draw(400_000))  # the population's ratio of sums (law of large numbers)
    hits, widths = 0, []
    for i in range(reps):
        sample = draw(n)
        ci = cell_interval([run_from_arrays(np.arange(n).astype(str), sample, "sim")], b, seed=i)
        hits += ci["low"] <= truth <= ci["high"]
        widths.append(ci["high"] - ci["low"])
    coverage = hits / reps
    print(f"coverage {coverage:.3f} over {reps} test sets of {n} images, mean width {np.mean(widths):.2f}")
    assert 0.90 <= coverage <= 0.99, coverage


# ----------------------------------------------------------------------------------------- paired
def test_paired_identical_better_and_worse():
    rng = np.random.default_rng(1)
    base = HAND[rng.integers(0, 4, size=40)]
    names = [f"i{j:02d}.png" for j in range(40)]
    a = run_from_arrays(names, base, "a")
    same = paired_difference([a], [run_from_arrays(names, base.copy(), "b")], 500)
    assert (same["diff"], same["low"], same["high"], same["excludes_zero"]) == (0.0, 0.0, 0.0, False)
    better = base.copy()
    moved = better[:, :, 1] // 2  # half the false positives become true positives: clearly better
    better[:, :, 0] += moved
    better[:, :, 1] -= moved
    res = paired_difference([run_from_arrays(names, better, "better")], [a], 500)
    assert res["diff"] > 0 and res["low"] > 0 and res["excludes_zero"]
    assert res["point_a"] == miou_from_counts(better) and res["point_b"] == miou_from_counts(base)
    rev = paired_difference([a], [run_from_arrays(names, better, "better")], 500)
    assert rev["high"] < 0 and rev["excludes_zero"]
    assert rev["diff"] == pytest.approx(-res["diff"])


def test_paired_interval_is_narrower_than_the_unpaired_intervals():
    """Pairing removes the shared image difficulty: the difference's sd is far below either cell's."""
    rng = np.random.default_rng(2)
    base = HAND[rng.integers(0, 4, size=50)] * rng.integers(1, 5, size=(50, 1, 1))
    names = [str(j) for j in range(50)]
    a, b = run_from_arrays(names, base, "a"), run_from_arrays(names, base + np.array([1, 0, 0]), "b")
    res = paired_difference([b], [a], 400)
    assert res["std"] < 0.5 * min(cell_interval([a], 400)["std"], cell_interval([b], 400)["std"])


def test_paired_refuses_other_test_images_naming_the_file(tmp_path, capsys):
    rng = np.random.default_rng(3)
    imgs = random_images(rng, 3, 2)
    cell_a = tmp_path / "cells/ds/lora/default/seed0"
    cell_b = tmp_path / "cells/ds/mopeft/default/seed0"
    combine(tmp_path, cell_a, [write_unit(cell_a, "main", imgs, ["a.png", "b.png", "c.png"], 2)], 2)
    combine(tmp_path, cell_b, [write_unit(cell_b, "main", imgs, ["a.png", "b.png", "x.png"], 2)], 2)
    with pytest.raises(ValueError, match="test images differ") as err:
        paired_difference(load_cell_runs([cell_a]), load_cell_runs([cell_b]))
    assert str(cell_b) in str(err.value) and "x.png" in str(err.value)
    rc = main(["bootstrap", "--cell", str(cell_b), "--vs", str(cell_a)])
    out, err_text = capsys.readouterr()
    assert rc == 2 and out == "" and err_text.count("\n") == 1 and str(cell_a) in err_text


# -------------------------------------------------------------------------- units, folds and seeds
def test_paxray_tasks_share_one_draw_and_reproduce_the_cell_miou(tmp_path):
    rng = np.random.default_rng(4)
    names = [f"x{j}.png" for j in range(6)]
    cell = tmp_path / "results/demo/cells/paxray4/lora/default/seed0"
    units = [write_unit(cell, t, random_images(rng, 6, 2), names, 2) for t in PAXRAY_TASKS]
    recorded = combine(tmp_path, cell, units, 2, tasks=PAXRAY_TASKS)
    run = load_run(cell / "metrics.json")
    assert recorded["combine"] == "mean"
    assert len(run.strata) == 1 and len(run.strata[0].parts) == 4 and run.n_images == 6
    assert run.point == pytest.approx(recorded["miou"], abs=1e-12)
    assert cell_interval([run], 300)["point"] == pytest.approx(recorded["miou"], abs=1e-12)
    # one draw for all tasks: four copies of one task have exactly that task's interval
    part = run.strata[0].parts[0]
    joint = Run(Path("x"), (Stratum(run.strata[0].images, (part,) * 4),))
    single = Run(Path("y"), (Stratum(run.strata[0].images, (part,)),))
    assert cell_interval([joint], 300)["low"] == pytest.approx(cell_interval([single], 300)["low"])
    assert cell_interval([joint], 300)["std"] == pytest.approx(cell_interval([single], 300)["std"])


def test_paxray_tasks_with_other_images_are_resampled_independently(tmp_path):
    rng = np.random.default_rng(5)
    cell = tmp_path / "cells/paxray4/lora/default/seed0"
    units = [
        write_unit(cell, t, random_images(rng, 4, 2), [f"{t}{j}" for j in range(4)], 2) for t in PAXRAY_TASKS
    ]
    recorded = combine(tmp_path, cell, units, 2, tasks=PAXRAY_TASKS)
    run = load_run(cell)
    assert len(run.strata) == 4 and run.n_images == 16
    assert cell_interval([run], 200)["point"] == pytest.approx(recorded["miou"], abs=1e-12)


def test_kfold_cell_is_one_pooled_test_set(tmp_path):
    rng = np.random.default_rng(6)
    imgs = random_images(rng, 7, 3)
    names = [f"t{j}.png" for j in range(7)]
    cell = tmp_path / "cells/dark_zurich/lora/default/seed0"
    units = [
        write_unit(cell, "fold0", imgs[:3], names[:3], 3),
        write_unit(cell, "fold1", imgs[3:], names[3:], 3),
    ]
    recorded = combine(tmp_path, cell, units, 3, train_split="none")
    run = load_run(cell)
    assert recorded["combine"] == "pool" and run.point == recorded["miou"]  # exactly: pooled counts
    folds = [dict(zip(*np.load(u / "per_image.npz").values(), strict=True)) for u in units]
    # the same interval as the concatenated per-image counts scored as one test set
    pooled = run_from_arrays(names, np.stack([{**folds[0], **folds[1]}[n] for n in names]), "pooled")
    assert cell_interval([run], 300) | {"method": ""} == cell_interval([pooled], 300) | {"method": ""}
    # an image in two folds is refused, naming the fold's file
    np.savez(units[1] / "per_image.npz", images=np.array(["t0.png", *names[4:]]),
             counts=np.load(units[1] / "per_image.npz")["counts"])  # fmt: skip
    with pytest.raises(ValueError, match="exactly one fold") as err:
        load_run(cell)
    assert str(units[1] / "per_image.npz") in str(err.value)


def test_seeds_are_combined_and_must_share_the_test_images(tmp_path, capsys):
    rng = np.random.default_rng(7)
    names = ["a.png", "b.png", "c.png", "d.png"]
    cells = []
    for seed in range(3):
        cell = tmp_path / f"results/demo/cells/ds/lora/default/seed{seed}"
        combine(tmp_path, cell, [write_unit(cell, "main", random_images(rng, 4, 3), names, 3)], 3)
        cells.append(cell)
    runs = load_cell_runs(cells)
    ci = cell_interval(runs, 300)
    assert ci["n_seeds"] == 3 and ci["point"] == pytest.approx(np.mean([r.point for r in runs]))
    out = tmp_path / "bootstrap.json"
    assert main(["bootstrap", "--cell", *map(str, cells), "--resamples", "300", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == written
    assert written["cell"]["low"] == ci["low"] and written["cell"]["runs"] == list(map(str, cells))
    odd = tmp_path / "results/demo/cells/ds/lora/default/seed9"
    combine(tmp_path, odd, [write_unit(odd, "main", random_images(rng, 4, 3), [*names[:3], "e.png"], 3)], 3)
    with pytest.raises(ValueError, match="test images differ") as err:
        load_cell_runs([*cells, odd])
    assert str(odd) in str(err.value)


def test_bootstrap_cli_paired_output(tmp_path, capsys):
    rng = np.random.default_rng(8)
    names = [f"{j}.png" for j in range(8)]
    imgs = random_images(rng, 8, 2, size=(8, 8))
    good = [(gt.clip(max=1) * (gt != 255), gt) for _, gt in imgs]  # perfect on every valid pixel
    cell_a, cell_b = tmp_path / "a/seed0", tmp_path / "b/seed0"
    combine(tmp_path, cell_a, [write_unit(cell_a, "main", good, names, 2)], 2)
    combine(tmp_path, cell_b, [write_unit(cell_b, "main", imgs, names, 2)], 2)
    out = tmp_path / "p.json"
    assert (
        main(["bootstrap", "--cell", str(cell_a), "--vs", str(cell_b), "--seed", "3", "--out", str(out)]) == 0
    )
    res = json.loads(out.read_text())
    capsys.readouterr()
    assert set(res) == {"cell", "vs", "paired"}
    assert res["cell"]["point"] == 100.0 and res["cell"]["low"] == 100.0
    paired = res["paired"]
    assert paired["diff"] == pytest.approx(100.0 - res["vs"]["point"]) and paired["excludes_zero"]
    assert paired["n_resamples"] == 1000 and paired["seed"] == 3 and paired["n_images"] == 8


def test_stale_or_missing_files_are_errors_naming_them(tmp_path):
    rng = np.random.default_rng(9)
    cell = tmp_path / "cells/ds/lora/default/seed0"
    unit = write_unit(cell, "main", random_images(rng, 3, 2), ["a", "b", "c"], 2)
    combine(tmp_path, cell, [unit], 2)
    data = dict(np.load(unit / "per_image.npz"))
    np.savez(unit / "per_image.npz", images=data["images"], counts=data["counts"][::-1] * [1, 2, 1])
    with pytest.raises(ValueError, match="different evaluations") as err:
        load_run(cell)
    assert str(unit / "metrics.json") in str(err.value)
    (unit / "per_image.npz").unlink()
    with pytest.raises(FileNotFoundError, match="re-run `mopeft evaluate`") as err:
        load_run(cell)
    assert str(unit / "per_image.npz") in str(err.value)
    with pytest.raises(ValueError, match="at least 2 resamples"):
        cell_interval([run_from_arrays(["a"], HAND[:1], "x")], 1)
