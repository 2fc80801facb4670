"""ConfusionMatrix against a brute-force per-class pixel loop and hand-computed MESS cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mopeft.evaluation.metrics import ConfusionMatrix, combine_mean, pool


def brute_force(preds, gts, k, ignore=255):
    """Independent reference: loop over every pixel of every image, class by class.

    IoU_c = |{valid px: pred==c and gt==c}| / |{valid px: pred==c or gt==c}|, valid = gt != ignore,
    defined where the union is non-empty; acc_c = hits / |gt==c|.
    """
    iou, acc, gt_count = [], [], []
    total_hits = total_valid = 0
    for c in range(k):
        inter = union = n_gt = 0
        for pred, gt in zip(preds, gts, strict=True):
            for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist(), strict=True):
                if g == ignore:
                    continue
                inter += p == c and g == c
                union += p == c or g == c
                n_gt += g == c
        iou.append(inter / union if union else None)
        acc.append(inter / n_gt if n_gt else None)
        gt_count.append(n_gt)
        total_hits += inter
        total_valid += n_gt
    defined = [v for v in iou if v is not None]
    accs = [v for v in acc if v is not None]
    fw = sum(iou[c] * gt_count[c] / total_valid for c in range(k) if gt_count[c])
    return {
        "miou": 100 * sum(defined) / len(defined),
        "per_class_iou": [None if v is None else 100 * v for v in iou],
        "macc": 100 * sum(accs) / len(accs),
        "pacc": 100 * total_hits / total_valid,
        "fwiou": 100 * fw,
        "num_pixels": total_valid,
    }


def assert_close_lists(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if y is None:
            assert x is None
        else:
            assert x == pytest.approx(y, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = 6
    preds, gts = [], []
    cm = ConfusionMatrix(k)
    for _ in range(4):
        shape = tuple(rng.integers(3, 9, size=2))
        # class 5 never appears (skipped); class 4 only in predictions (IoU 0); K=6 "no class" preds
        gt = rng.choice([0, 1, 2, 3, 255], size=shape, p=[0.3, 0.2, 0.2, 0.1, 0.2]).astype(np.uint8)
        pred = rng.choice([0, 1, 2, 3, 4, 6], size=shape).astype(np.uint8)
        preds.append(pred)
        gts.append(gt)
        cm.update(pred, gt)
    got = cm.compute()
    ref = brute_force(preds, gts, k)
    assert got["per_class_iou"][5] is None
    assert got["per_class_iou"][4] == 0.0
    assert_close_lists(got["per_class_iou"], ref["per_class_iou"])
    for key in ("miou", "macc", "pacc", "fwiou"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key
    assert got["num_pixels"] == ref["num_pixels"]


def test_dataset_level_not_per_image_mean():
    # Image A: gt [0,0,0,1], pred all 0 -> per image IoU0 = 3/4, IoU1 = 0 -> 0.375
    # Image B: gt all 1, pred all 1 -> class 0 absent from both -> per image mIoU 1.0
    # per-image mean = 0.6875; dataset level: IoU0 = 3/4, IoU1 = 4/5 -> 0.775
    a_gt, a_pred = np.array([0, 0, 0, 1]), np.zeros(4, dtype=int)
    b_gt, b_pred = np.ones(4, dtype=int), np.ones(4, dtype=int)
    cm = ConfusionMatrix(2)
    cm.update(a_pred, a_gt)
    cm.update(b_pred, b_gt)
    assert cm.compute()["miou"] == pytest.approx(77.5)
    per_image = []
    for p, g in ((a_pred, a_gt), (b_pred, b_gt)):
        single = ConfusionMatrix(2)
        single.update(p, g)
        per_image.append(single.compute()["miou"])
    assert per_image == [pytest.approx(37.5), pytest.approx(100.0)]
    assert np.mean(per_image) == pytest.approx(68.75)


def test_ignore_pixels_excluded_entirely():
    # predictions on ignored pixels (any class) must change nothing
    gt = np.array([[0, 1, 255, 255]])
    cm1 = ConfusionMatrix(3)
    cm1.update(np.array([[0, 1, 2, 0]]), gt)
    cm2 = ConfusionMatrix(3)
    cm2.update(np.array([[0, 1, 1, 1]]), gt)
    assert cm1.compute() == cm2.compute()
    res = cm1.compute()
    assert res["miou"] == 100.0 and res["per_class_iou"] == [100.0, 100.0, None]
    assert res["num_pixels"] == 2
    assert cm1.matrix[:, 3].sum() == 0


def test_hand_computed_case_with_no_class_prediction():
    # K=2; gt [0,0,1,1,1], pred [0,2,1,1,0]: pred 2 = "no class" on a class-0 pixel = miss of class 0
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 2, 1, 1, 0]), np.array([0, 0, 1, 1, 1]))
    res = cm.compute()
    # class 0: tp 1, gt 2, pred 2 -> 1/3 ; class 1: tp 2, gt 3, pred 2 -> 2/3
    assert res["per_class_iou"] == [pytest.approx(100 / 3), pytest.approx(200 / 3)]
    assert res["miou"] == pytest.approx(50.0)
    assert res["macc"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert res["pacc"] == pytest.approx(60.0)
    assert res["fwiou"] == pytest.approx(100 * (2 / 5 * 1 / 3 + 3 / 5 * 2 / 3))


def test_torch_input_and_bad_input():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [2, 255]], dtype=torch.uint8))
    assert cm.compute()["miou"] == 100.0
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="ground truth has values \\[3\\]"):
        cm.update(np.zeros(2, int), np.array([3, 0]))
    with pytest.raises(ValueError, match="prediction has values \\[4\\]"):
        cm.update(np.array([4, 0]), np.zeros(2, int))
    with pytest.raises(ValueError, match="integer"):
        cm.update(np.zeros(2), np.zeros(2, int))


def test_empty_matrix_gives_nan():
    assert math.isnan(ConfusionMatrix(2).compute()["miou"])


def test_pool_save_load_and_combine(tmp_path):
    rng = np.random.default_rng(3)
    data = [(rng.integers(0, 4, (5, 5)), rng.choice([0, 1, 2, 3, 255], (5, 5))) for _ in range(4)]
    whole = ConfusionMatrix(4)
    folds = [ConfusionMatrix(4), ConfusionMatrix(4)]
    for i, (p, g) in enumerate(data):
        whole.update(p, g)
        folds[i % 2].update(p, g)
    for i, f in enumerate(folds):
        f.save(tmp_path / f"fold{i}.npy")
    loaded = [ConfusionMatrix.load(tmp_path / f"fold{i}.npy") for i in range(2)]
    assert loaded[0].num_classes == 4
    np.testing.assert_array_equal(pool(loaded).matrix, whole.matrix)
    assert pool(loaded).compute() == whole.compute()
    assert list(tmp_path.iterdir()) and not list(tmp_path.glob(".*"))  # no temp files left

    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"bad\.npy"):
        ConfusionMatrix.load(tmp_path / "bad.npy")
    np.save(tmp_path / "rect.npy", np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"rect\.npy.*square"):
        ConfusionMatrix.load(tmp_path / "rect.npy")
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        ConfusionMatrix.load(tmp_path / "missing.npy")

    combined = combine_mean([{"miou": 50.0}, {"miou": 70.0}, {"miou": 60.0}, {"miou": 80.0}])
    assert combined["miou"] == pytest.approx(65.0)
    with pytest.raises(ValueError):
        combine_mean([])
