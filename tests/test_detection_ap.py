"""DOTA-style VOC AP: hand-computed rankings, an independent AP formula, the AP as computed before
the shapely IoU (per-pair hand-written clip, no pre-filter) on realistic scenes, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from detection_reference import box, reference_class_ap

from mopeft.cli import main
from mopeft.detection import CLASSES, TABLE_A1_CLASSES
from mopeft.detection.ap import Detection, GTBox, class_ap, evaluate, voc_ap
from mopeft.detection.xml_io import Annotation, Obj, read_xml, write_xml


def sq(x, y, s=10.0):
    return np.array([[x, y], [x + s, y], [x + s, y + s], [x, y + s]], dtype=float)


def det(img, score, poly, cls="Small Car"):
    return Detection(img, cls, score, poly)


# ------------------------------------------------------------------------------------- class_ap
def test_perfect_detections_give_one():
    gt = {"a": [GTBox(sq(0, 0)), GTBox(sq(50, 50))], "b": [GTBox(sq(0, 0))]}
    dets = [det("a", 0.9, sq(0, 0)), det("a", 0.8, sq(50, 50)), det("b", 0.7, sq(0, 0))]
    assert class_ap(dets, gt) == pytest.approx(1.0)


def test_tp_fp_tp_ranking():
    # ranks: TP (P=1, R=.5), FP (P=.5, R=.5), TP (P=2/3, R=1)
    # envelope: R in (0,.5] -> 1, R in (.5,1] -> 2/3  =>  AP = 1*0.5 + (2/3)*0.5 = 0.8333...
    gt = {"a": [GTBox(sq(0, 0)), GTBox(sq(50, 50))]}
    dets = [det("a", 0.9, sq(0, 0)), det("a", 0.8, sq(100, 100)), det("a", 0.7, sq(50, 50))]
    assert class_ap(dets, gt) == pytest.approx(0.5 + (2 / 3) * 0.5)


def test_fp_first_lowers_ap():
    # FP, TP, TP with 2 GT: P = 0, 1/2, 2/3 at R = 0, .5, 1 -> envelope 2/3 everywhere -> AP = 2/3
    gt = {"a": [GTBox(sq(0, 0)), GTBox(sq(50, 50))]}
    dets = [det("a", 0.9, sq(100, 100)), det("a", 0.8, sq(0, 0)), det("a", 0.7, sq(50, 50))]
    assert class_ap(dets, gt) == pytest.approx(2 / 3)


def test_duplicate_is_false_positive_and_iou_threshold():
    gt = {"a": [GTBox(sq(0, 0))]}
    # second detection hits the same (already matched) box -> FP; AP still 1 (TP came first)
    assert class_ap([det("a", 0.9, sq(0, 0)), det("a", 0.8, sq(0, 0))], gt) == pytest.approx(1.0)
    # duplicate ranked first at IoU 1/3 (< 0.5) -> FP, then TP: P = 0, 1/2 at R = 0, 1 -> AP = 0.5
    assert class_ap([det("a", 0.9, sq(5, 0)), det("a", 0.8, sq(0, 0))], gt) == pytest.approx(0.5)
    # IoU 1/3 counts at a threshold of 0.3
    assert class_ap([det("a", 0.9, sq(5, 0))], gt, iou_thr=0.3) == pytest.approx(1.0)


def test_difficult_boxes_are_ignored():
    gt = {"a": [GTBox(sq(0, 0)), GTBox(sq(50, 50), difficult=True)]}
    # the detection on the difficult box is neither TP nor FP; npos = 1
    dets = [det("a", 0.9, sq(50, 50)), det("a", 0.8, sq(0, 0))]
    assert class_ap(dets, gt) == pytest.approx(1.0)
    assert class_ap([], {"a": [GTBox(sq(0, 0), difficult=True)]}) is None


def test_no_detections_and_no_gt():
    assert class_ap([], {"a": [GTBox(sq(0, 0))]}) == 0.0
    assert class_ap([det("a", 0.9, sq(0, 0))], {}) is None


def test_voc_ap_against_independent_formula():
    """All-point AP equals (1/npos) * sum over TPs of the best precision at that recall or later."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        hits = rng.random(int(rng.integers(1, 30))) < 0.6
        npos = int(hits.sum()) + int(rng.integers(0, 4))
        if npos == 0:
            continue
        tp = np.cumsum(hits)
        prec = tp / np.arange(1, len(hits) + 1)
        expected = sum(prec[k:].max() for k in np.flatnonzero(hits)) / npos
        assert voc_ap(tp / npos, prec) == pytest.approx(expected)


def random_scene(rng, images=12, classes=("Small Car", "Bus", "Tennis Court")):
    """FAIR-1M-like tiles: clustered rotated GT (some difficult), detections jittered from them
    (some duplicated), random false positives, and images without GT of a class."""
    gt = {}
    dets = []
    for k in range(images):
        img = f"img{k}"
        gt[img] = []
        for cls in classes[: 1 + k % len(classes)]:
            centre = rng.uniform(100, 500, 2)
            for _ in range(int(rng.integers(0, 25))):
                cx, cy = centre + rng.normal(0, 60, 2)
                w, h = rng.uniform(8, 40), rng.uniform(4, 20)
                angle = rng.uniform(0, np.pi)
                gt[img].append((cls, GTBox(box(cx, cy, w, h, angle), difficult=bool(rng.random() < 0.1))))
                for _ in range(int(rng.integers(0, 3))):  # 0-2 detections per object
                    dx, dy = rng.normal(0, 0.1, 2) * (w, h)
                    size = rng.uniform(0.8, 1.2, 2) * (w, h)
                    jit = box(cx + dx, cy + dy, *size, angle + rng.normal(0, 0.15))
                    dets.append(Detection(img, cls, float(rng.random()), jit))
        for _ in range(int(rng.integers(0, 15))):  # false positives anywhere, any class
            poly = box(*rng.uniform(0, 600, 2), rng.uniform(8, 40), rng.uniform(4, 20), rng.uniform(0, np.pi))
            dets.append(Detection(img, str(rng.choice(classes)), float(rng.random()), poly))
    return dets, gt


def test_ap_equals_the_per_pair_clip_reference_on_realistic_scenes():
    """The vectorised shapely IoU with the axis-aligned pre-filter gives the same AP, to 1e-12."""
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(4):
        dets, gt = random_scene(rng)
        res = evaluate(dets, gt)
        for cls in ("Small Car", "Bus", "Tennis Court"):
            cls_dets = [d for d in dets if d.cls == cls]
            cls_gt = {img: [b for c, b in boxes if c == cls] for img, boxes in gt.items()}
            cls_gt = {img: boxes for img, boxes in cls_gt.items() if boxes}
            for thr in (0.3, 0.5, 0.7):
                ref = reference_class_ap(cls_dets, cls_gt, thr)
                ours = class_ap(cls_dets, cls_gt, thr)
                assert (ours is None) == (ref is None)
                if ref is not None:
                    assert abs(ours - ref) < 1e-12, (cls, thr)
                    checked += 0 < ref < 1  # a ranking with both hits and misses
            ref = reference_class_ap(cls_dets, cls_gt)
            assert res["per_class_ap"][cls] == pytest.approx(None if ref is None else 100 * ref, abs=1e-10)
    assert checked > 20


# ------------------------------------------------------------------------------------- evaluate
def test_evaluate_means_and_ignored_classes():
    gt = {
        "a": [("Small Car", GTBox(sq(0, 0))), ("Small Car", GTBox(sq(50, 50))), ("Bus", GTBox(sq(100, 0))),
              ("other-vehicle", GTBox(sq(200, 0)))],
    }
    dets = [
        det("a", 0.9, sq(0, 0)), det("a", 0.8, sq(100, 100)), det("a", 0.7, sq(50, 50)),  # Small Car 83.33
        det("a", 0.9, sq(200, 0), "other-vehicle"),  # other-vehicle 100
        det("a", 0.9, sq(300, 0), "Tugboat"),  # no Tugboat GT: ignored in every mean
        # Bus: GT but no detection -> 0
    ]
    res = evaluate(dets, gt)
    ap = res["per_class_ap"]
    assert ap["Small Car"] == pytest.approx(250 / 3)
    assert ap["Bus"] == 0.0 and ap["other-vehicle"] == pytest.approx(100.0)
    assert ap["Tugboat"] is None
    assert res["map"] == pytest.approx((250 / 3 + 0 + 100) / 3)
    assert res["map_table_a1"] == pytest.approx((250 / 3 + 0) / 2)  # other-* left out
    assert res["category_means"]["Vehicle"] == pytest.approx(250 / 6)
    assert res["category_means"]["Ship"] is None
    assert len(ap) == len(CLASSES) == 37 and len(TABLE_A1_CLASSES) == 34


# -------------------------------------------------------------------------------------- CLI / files
FAIR_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotation>
  <source><filename>7.tif</filename><origin>GF2/GF3</origin></source>
  <research><version>1.0</version><provider>x</provider><author>x</author>
    <pluginname>FAIR1M</pluginname><pluginclass>object detection</pluginclass>
    <time>2021-07-21</time></research>
  <size><width>100</width><height>80</height><depth>3</depth></size>
  <objects>
    <object><coordinate>pixel</coordinate><type>rectangle</type><description>None</description>
      <possibleresult><name>Passenger Ship</name></possibleresult>
      <points><point>10.000000,10.000000</point><point>30.000000,10.000000</point>
        <point>30.000000,20.000000</point><point>10.000000,20.000000</point><point>10.000000,10.000000</point>
      </points>
    </object>
  </objects>
</annotation>
"""


def test_reads_real_format_and_roundtrips(tmp_path):
    (tmp_path / "7.xml").write_text(FAIR_XML)
    ann = read_xml(tmp_path / "7.xml")
    assert (ann.width, ann.height, ann.filename) == (100, 80, "7.tif")
    assert [o.name for o in ann.objects] == ["Passenger Ship"]
    np.testing.assert_allclose(ann.objects[0].poly, [[10, 10], [30, 10], [30, 20], [10, 20]])
    write_xml(tmp_path / "copy.xml", ann)
    again = read_xml(tmp_path / "copy.xml")
    np.testing.assert_allclose(again.objects[0].poly, ann.objects[0].poly)
    assert "<point>10.000000,10.000000</point>" in (tmp_path / "copy.xml").read_text()


@pytest.fixture
def gt_dir(tmp_path):
    d = tmp_path / "gt"
    d.mkdir()
    (d / "7.xml").write_text(FAIR_XML)
    cars = [Obj("Small Car", sq(0, 0)), Obj("Small Car", sq(40, 40))]
    write_xml(d / "8.xml", Annotation("8.tif", 64, 64, 3, cars))
    write_xml(d / "9.xml", Annotation("9.tif", 64, 64, 3, []))  # an empty tile still counts as an image
    return d


def run(capsys, *args):
    rc = main(["score-detections", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def write_preds(path, preds):
    path.write_text(json.dumps(preds))
    return path


def flat(poly):
    return np.asarray(poly).ravel().tolist()


def test_cli_scores(tmp_path, gt_dir, capsys):
    preds = write_preds(tmp_path / "p.json", [
        {"image": "7", "class": "PassengerShip", "score": 0.9, "poly": [10, 10, 30, 10, 30, 20, 10, 20]},
        {"image": "8", "class": "Small Car", "score": 0.9, "poly": flat(sq(0, 0))},
        {"image": "9", "class": "Small Car", "score": 0.8, "poly": flat(sq(0, 0))},  # FP on the empty tile
        {"image": "8", "class": "Small_Car", "score": 0.7, "poly": flat(sq(40, 40))},
    ])
    out_file = tmp_path / "res" / "ap.json"
    rc, out, err = run(capsys, "--pred", preds, "--gt", gt_dir, "--out", out_file, "--method", "lora")
    assert rc == 0, err
    res = json.loads(out)
    assert res["per_class_ap"]["Passenger Ship"] == pytest.approx(100.0)
    assert res["per_class_ap"]["Small Car"] == pytest.approx(250 / 3)  # TP, FP, TP with 2 GT
    assert res["map"] == pytest.approx((100 + 250 / 3) / 2)
    assert res["num_images"] == 3 and res["num_detections"] == 4 and res["method"] == "lora"
    assert json.loads(out_file.read_text())["map"] == pytest.approx(res["map"])


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"image": "7", "class": "Spaceship", "score": 1, "poly": [0] * 8}, "unknown class 'Spaceship'"),
        ({"image": "7", "class": "Bus", "score": 1, "poly": [0] * 6}, "8 numbers"),
        ({"image": "404", "class": "Bus", "score": 1, "poly": [0] * 8}, "image '404' has no GT XML"),
        ({"image": "7", "class": "Bus", "poly": [0] * 8}, "needs keys"),
    ],
)
def test_cli_bad_predictions(tmp_path, gt_dir, capsys, record, message):
    preds = write_preds(tmp_path / "p.json", [record])
    rc, _, err = run(capsys, "--pred", preds, "--gt", gt_dir)
    assert rc == 2
    assert str(preds) in err and message in err


def test_cli_bad_gt(tmp_path, gt_dir, capsys):
    preds = write_preds(tmp_path / "p.json", [])
    bad = gt_dir / "10.xml"
    bad.write_text("<annotation><size><width>3")
    rc, _, err = run(capsys, "--pred", preds, "--gt", gt_dir)
    assert rc == 2 and str(bad) in err and "malformed XML" in err
    bad.write_text(FAIR_XML.replace("Passenger Ship", "Cruise Ship"))
    rc, _, err = run(capsys, "--pred", preds, "--gt", gt_dir)
    assert rc == 2 and str(bad) in err and "unknown class 'Cruise Ship'" in err


# ------------------------------------------------------------------------------------------- Table A.1
def test_table_a1_from_ap_files(tmp_path, capsys):
    import pandas as pd

    from mopeft.report import paper
    from mopeft.report.table_a1 import assemble

    study = paper.load_paper_csv("fair1m_map")
    lora = {name: float(v) for name, v in zip(study["class"], study["lora"], strict=True)}  # CSV spelling
    lora["other-ship"] = 10.0
    cell = tmp_path / "cells/fair1m/lora/default/seed0/ap.json"
    cell.parent.mkdir(parents=True)
    cell.write_text(json.dumps({"method": "lora", "per_class_ap": lora}))
    vpt = tmp_path / "vpt_ap.json"
    vpt.write_text(json.dumps({"method": "vpt", "per_class_ap": {"Boeing737": 40.0, "Bus": None}}))
    df, notes = assemble([cell, vpt])
    classes = df[df["row"] == "class"]
    assert len(classes) == 34 and "Passenger Ship" in set(classes["class"])
    assert classes["lora_diff"].abs().max() < 1e-9  # the study's own values reproduce it exactly
    means = df[df["row"] == "category mean"].set_index("category")
    assert means.loc["Airplane", "lora_ours"] == pytest.approx(56.75, abs=0.005)  # printed category mean
    assert means.loc["Airplane", "baseline_study"] == pytest.approx(49.83)
    row = df[df["row"] == "mAP (34 classes)"].iloc[0]
    assert row["lora_ours"] == pytest.approx(study["lora"].mean())
    row37 = df[df["row"] == "mAP (37 classes)"].iloc[0]
    assert row37["lora_ours"] == pytest.approx((study["lora"].sum() + 10.0) / 35)  # 34 + other-ship
    b737 = classes.set_index("class").loc["Boeing737"]
    assert b737["vpt_ours"] == 40.0 and b737["vpt_diff"] == pytest.approx(40.0 - 38.92)
    assert pd.isna(b737["baseline_ours"])
    # the study's Court baseline mean (54.45) is not the mean of its classes (68.07): said in the notes
    assert any("54.45" in n and "68.07" in n for n in notes)

    out = tmp_path / "tables/table_a1"
    cfg = tmp_path / "config.yaml"
    cfg.write_text("run: test\n")
    rc = main(["table", "a1", "--cells", str(cell), str(vpt), "--config", str(cfg), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert {p.suffix for p in out.parent.iterdir()} == {".csv", ".md", ".tex"}
    assert "Prefix Tuning" in out.with_suffix(".md").read_text()


def test_table_a1_reports_mean_std_and_n_over_seeds(tmp_path):
    from mopeft.report.table_a1 import assemble, display_frame

    files = []
    for seed, (b737, bus) in enumerate([(40.0, 10.0), (50.0, 30.0)]):
        f = tmp_path / f"cells/fair1m/lora/default/seed{seed}/ap.json"
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps({"method": "lora", "per_class_ap": {"Boeing737": b737, "Bus": bus}}))
        files.append(f)
    df, _ = assemble(files)
    b737 = df[(df["row"] == "class") & (df["class"] == "Boeing737")].iloc[0]
    assert (b737["lora_ours"], b737["lora_n"]) == (45.0, 2)
    assert b737["lora_std"] == pytest.approx(7.0711, abs=1e-4)  # sample std of 40, 50
    assert b737["lora_diff"] == pytest.approx(45.0 - 48.17)
    # mAP over 34 classes: per seed (40+10)/2 = 25 and (50+30)/2 = 40 -> 32.5 ± 10.61 (n=2)
    m = df[df["row"] == "mAP (34 classes)"].iloc[0]
    assert m["lora_ours"] == pytest.approx(32.5) and m["lora_std"] == pytest.approx(10.6066, abs=1e-4)
    shown = display_frame(df).set_index("Class").loc["Boeing737", "LoRA (ours)"]
    assert shown == "45.00 ± 7.07 (n=2)"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("<point>30.000000,10.000000</point>", "<point>nan,nan</point>", "point 'nan,nan' is not finite"),
        ("<point>30.000000,20.000000</point>", "<point>30,inf</point>", "point '30,inf' is not finite"),
        ("<width>100</width>", "<width>inf</width>", "<size> is not numeric"),
    ],
)
def test_cli_non_finite_gt_is_an_error_naming_the_file(tmp_path, gt_dir, capsys, old, new, message):
    preds = write_preds(tmp_path / "p.json", [])
    bad = gt_dir / "10.xml"
    assert old in FAIR_XML
    bad.write_text(FAIR_XML.replace(old, new))
    rc, _, err = run(capsys, "--pred", preds, "--gt", gt_dir)
    assert rc == 2 and err.count("\n") == 1 and f"{bad}: {message}" in err


def test_cli_gt_names_match_case_insensitively(tmp_path, gt_dir, capsys):
    preds = write_preds(tmp_path / "p.json", [
        {"image": "7", "class": "Passenger Ship", "score": 0.9, "poly": [10, 10, 30, 10, 30, 20, 10, 20]},
    ])  # fmt: skip
    rc, out, err = run(capsys, "--pred", preds, "--gt", gt_dir)
    assert rc == 0, err
    lower = json.loads(out)
    (gt_dir / "7.xml").rename(gt_dir / "7.XML")
    (gt_dir / "._8.xml").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS junk next to a file: ignored
    rc, out, err = run(capsys, "--pred", preds, "--gt", gt_dir)
    assert rc == 0, err
    assert json.loads(out) == lower and lower["num_images"] == 3
    (gt_dir / "7.xml").write_text(FAIR_XML)
    rc, _, err = run(capsys, "--pred", preds, "--gt", gt_dir)
    assert rc == 2 and "7.XML and 7.xml annotate the same image" in err
