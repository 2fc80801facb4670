"""`mopeft score` end to end on generated PNGs: values, pairing and every bad-input error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mopeft.cli import main
from mopeft.evaluation.metrics import ConfusionMatrix


def write_png(path, array, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=None).convert(mode).save(path)


@pytest.fixture
def folders(tmp_path):
    """Two images whose dataset-level mIoU is hand-computed: 77.5 (per-image mean would be 68.75)."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_png(gt / "a.png", [[0, 0], [0, 1]])
    write_png(pred / "a.png", [[0, 0], [0, 0]])
    write_png(gt / "b.png", [[1, 1], [1, 1], [255, 255]])
    write_png(pred / "b.png", [[1, 1], [1, 1], [0, 0]])  # predictions on ignored pixels do not count
    return pred, gt


def run_score(capsys, *args):
    rc = main(["score", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_score_hand_computed(folders, capsys, tmp_path):
    pred, gt = folders
    out_json, conf = tmp_path / "res" / "m.json", tmp_path / "res" / "c.npy"
    rc, out, err = run_score(
        capsys, "--pred", pred, "--gt", gt, "--num-classes", 2, "--out", out_json, "--confusion", conf
    )
    assert rc == 0, err
    res = json.loads(out)
    assert res["miou"] == pytest.approx(77.5)
    assert res["per_class_iou"] == [pytest.approx(75.0), pytest.approx(80.0)]
    assert res["num_images"] == 2 and res["num_pixels"] == 8
    assert json.loads(out_json.read_text())["miou"] == pytest.approx(77.5)
    assert ConfusionMatrix.load(conf).matrix.tolist() == [
        [3, 1, 0],
        [0, 4, 0],
        [0, 0, 0],
    ]  # rows pred, cols GT


def test_score_matches_matrix_on_random_pngs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix(5)
    for i in range(3):
        g = rng.choice([0, 1, 2, 3, 4, 255], size=(6, 7))
        p = rng.integers(0, 5, size=(6, 7))
        write_png(tmp_path / "gt" / f"img{i}.png", g)
        write_png(tmp_path / "pred" / f"img{i}.png", p, mode="P")  # palette PNGs hold ids too
        cm.update(p, g)
    rc, out, err = run_score(capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--num-classes", 5)
    assert rc == 0, err
    assert json.loads(out)["miou"] == pytest.approx(cm.compute()["miou"])


def expect_error(capsys, args, *fragments):
    rc, out, err = run_score(capsys, *args)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1, err  # one clean line, no traceback
    for frag in fragments:
        assert frag in err, (frag, err)


def test_missing_counterparts(folders, capsys):
    pred, gt = folders
    (pred / "b.png").rename(pred / "c.png")
    expect_error(
        capsys, ["--pred", pred, "--gt", gt, "--num-classes", 2], str(pred / "b.png"), "missing prediction"
    )
    (pred / "c.png").unlink()
    write_png(pred / "b.png", [[1, 1], [1, 1], [0, 0]])
    write_png(pred / "extra.png", [[0]])
    expect_error(
        capsys, ["--pred", pred, "--gt", gt, "--num-classes", 2], str(gt / "extra.png"), "missing label"
    )


def test_size_mismatch(folders, capsys):
    pred, gt = folders
    write_png(pred / "a.png", [[0, 0, 0], [0, 0, 0]])
    expect_error(capsys, ["--pred", pred, "--gt", gt, "--num-classes", 2], str(pred / "a.png"), "size")


def test_values_out_of_range(folders, capsys):
    pred, gt = folders
    write_png(gt / "a.png", [[0, 0], [0, 7]])
    expect_error(capsys, ["--pred", pred, "--gt", gt, "--num-classes", 2], str(gt / "a.png"), "[7]")
    write_png(gt / "a.png", [[0, 0], [0, 1]])
    write_png(pred / "b.png", [[1, 2], [1, 1], [0, 0]])
    expect_error(capsys, ["--pred", pred, "--gt", gt, "--num-classes", 2], str(pred / "b.png"), "[2]")


def test_unreadable_truncated_and_rgb(folders, capsys):
    pred, gt = folders
    data = (pred / "a.png").read_bytes()
    (pred / "a.png").write_bytes(data[: len(data) // 2])
    expect_error(capsys, ["--pred", pred, "--gt", gt, "--num-classes", 2], str(pred / "a.png"), "truncated")
    (pred / "a.png").write_bytes(b"garbage")
    expect_error(capsys, ["--pred", pred, "--gt", gt, "--num-classes", 2], str(pred / "a.png"))
    write_png(pred / "a.png", [[0, 0], [0, 0]], mode="RGB")
    expect_error(capsys, ["--pred", pred, "--gt", gt, "--num-classes", 2], str(pred / "a.png"), "mode RGB")


def test_empty_and_missing_folders(tmp_path, folders, capsys):
    _pred, gt = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(capsys, ["--pred", empty, "--gt", gt, "--num-classes", 2], str(empty), "no .png")
    expect_error(capsys, ["--pred", tmp_path / "nope", "--gt", gt, "--num-classes", 2], "nope", "not found")


def test_all_ignored_is_an_error(tmp_path, capsys):
    write_png(tmp_path / "gt" / "a.png", [[255, 255]])
    write_png(tmp_path / "pred" / "a.png", [[0, 1]])
    expect_error(capsys, ["--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--num-classes", 2], "ignore")


def test_score_bootstrap_interval_end_to_end(folders, capsys, tmp_path):
    """The fixture's 2 images have 4 equally likely resamples: {a,a} 37.5, {a,b} twice 77.5,
    {b,b} 100 (class 0 absent, skipped); so the 95 % interval is exactly [37.5, 100]."""
    pred, gt = folders
    out_json, counts = tmp_path / "res" / "m.json", tmp_path / "res" / "per_image.npz"
    args = ["--pred", pred, "--gt", gt, "--num-classes", 2, "--out", out_json, "--per-image", counts]
    rc, out, err = run_score(capsys, *args, "--bootstrap", 2000, "--seed", 4)
    assert rc == 0, err
    res = json.loads(out)
    assert json.loads(out_json.read_text()) == res
    boot = res["bootstrap"]
    assert boot["point"] == res["miou"] == pytest.approx(77.5)
    assert (boot["low"], boot["high"]) == (pytest.approx(37.5), pytest.approx(100.0))
    exact = np.array([37.5, 77.5, 77.5, 100.0])
    assert boot["std"] == pytest.approx(exact.std(), rel=0.05)
    assert (boot["n_images"], boot["n_resamples"], boot["seed"], boot["confidence"]) == (2, 2000, 4, 0.95)
    # the per-image counts as evaluate writes them: they sum to the pooled matrix
    data = np.load(counts)
    assert data["images"].tolist() == ["a.png", "b.png"]
    assert data["counts"].tolist() == [[[3, 1, 0], [0, 0, 1]], [[0, 0, 0], [4, 0, 0]]]
    # `mopeft bootstrap` on the written counts draws the same interval
    assert main(["bootstrap", "--cell", str(counts), "--resamples", "2000", "--seed", "4"]) == 0
    again = json.loads(capsys.readouterr().out)["cell"]
    assert {k: again[k] for k in boot} == boot
    # without --bootstrap the output is what it was
    rc, out, err = run_score(capsys, "--pred", pred, "--gt", gt, "--num-classes", 2)
    assert rc == 0 and "bootstrap" not in json.loads(out)
    expect_error(capsys, ["--pred", pred, "--gt", gt, "--num-classes", 2, "--bootstrap", 1], "--bootstrap")


def test_a_jpeg_named_png_is_refused(tmp_path):
    """`mopeft score` reads class ids; a lossy JPEG under a .png name would be scored silently."""
    import numpy as np
    from PIL import Image

    from mopeft.evaluation.score import read_id_png

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(path, format="JPEG")
    with pytest.raises(ValueError, match=r"x\.png: not a PNG \(its content is JPEG\)"):
        read_id_png(path)
