"""Masks2Boxes: rasterised rotated rectangles come back as boxes; scores and filters by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mopeft.data.datasets.fair1m import rasterise
from mopeft.detection.masks2boxes import component_corners, mask_to_boxes, masks_to_boxes
from mopeft.detection.rotated import area, iou


def box(cx, cy, w, h, angle):
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return corners @ np.array([[c, s], [-s, c]]) + [cx, cy]


@pytest.mark.parametrize("angle_deg", [0, 17, 30, 45, 72, 120])
def test_rasterised_rotated_rectangle_comes_back(angle_deg):
    truth = box(60, 50, 50, 22, np.deg2rad(angle_deg))
    mask = rasterise([truth], [1], 100, 120).astype(bool)
    (poly, hbox, comp), = mask_to_boxes(mask)
    assert iou(poly, truth) > 0.9
    assert comp.sum() == mask.sum()
    assert hbox == (
        int(np.flatnonzero(mask.any(0))[0]), int(np.flatnonzero(mask.any(1))[0]),
        int(np.flatnonzero(mask.any(0))[-1]) + 1, int(np.flatnonzero(mask.any(1))[-1]) + 1,
    )


def test_axis_aligned_block_is_exact():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True  # 3 rows x 6 columns -> rectangle [3,9] x [2,5]
    (poly, hbox, _), = mask_to_boxes(mask)
    assert area(poly) == pytest.approx(18.0)
    assert iou(poly, [[3, 2], [9, 2], [9, 5], [3, 5]]) == pytest.approx(1.0)
    assert hbox == (3, 2, 9, 5)
    corners = component_corners(mask[2:5, 3:9])
    assert corners.min(0).tolist() == [0, 0] and corners.max(0).tolist() == [6, 3]


def test_scores_components_and_min_size():
    probs = np.zeros((3, 20, 20))
    probs[0] = 0.6  # background wins where nothing else is set
    probs[1, 2:6, 2:6] = 0.9  # class 1, 16 px, mean prob 0.9
    probs[1, 2:6, 12:14] = 0.7  # class 1, 8 px
    probs[1, 2:6, 13] = 0.8  # ... mean over the 8 px = (4*0.7 + 4*0.8)/8 = 0.75
    probs[2, 15, 15] = 0.9  # class 2, a single pixel: dropped by min_size=4
    boxes = masks_to_boxes(probs, min_size=4)
    found = sorted((b.class_id, b.num_pixels, round(b.score, 6)) for b in boxes)
    assert found == [(1, 8, 0.75), (1, 16, 0.9)]
    presence = np.array([1.0, 0.5, 1.0])
    boxes = masks_to_boxes(probs, min_size=1, presence=presence)
    assert sorted((b.class_id, round(b.score, 6)) for b in boxes) == [(1, 0.375), (1, 0.45), (2, 0.9)]


def test_diagonal_pixels_are_one_component():
    mask = np.eye(6, dtype=bool)
    assert len(mask_to_boxes(mask)) == 1  # 8-connectivity


def test_bad_shapes():
    with pytest.raises(ValueError, match="K,H,W"):
        masks_to_boxes(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="presence"):
        masks_to_boxes(np.zeros((3, 4, 4)), presence=np.ones(2))


# --------------------------------------------------------------------------- class MLP and detection
def test_presence_targets_and_loss():
    import torch

    from mopeft.model.presence import ClassPresenceMLP
    from mopeft.train.losses import presence_loss, presence_targets

    labels = torch.tensor([[[0, 1], [255, 3]], [[2, 2], [2, 255]]])
    assert presence_targets(labels, 4).tolist() == [[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]]
    head = ClassPresenceMLP(dim=8, hidden=16)
    logits = head(torch.randn(2, 4, 8))
    assert logits.shape == (2, 4)
    # BCE by hand: logit 0 -> log 2 for either target
    assert presence_loss(torch.zeros(2, 4), torch.ones(2, 4)).item() == pytest.approx(np.log(2))
    logits.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_detect_folder_with_a_fake_model(tmp_path):
    import torch
    from PIL import Image

    from mopeft.evaluation.detect import detect_folder, scoring_mode
    from mopeft.model.presence import ClassPresenceMLP

    class Fake(torch.nn.Module):
        """Class 1 everywhere in the top-left quarter of the padded input, background elsewhere."""

        image_size, num_classes = 32, 3

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3, 8, 8)
            logits[:, 0] = 5.0
            logits[:, 1, :4, :4] = 10.0
            return logits

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images/7_0.png")
    model = Fake()
    assert scoring_mode(model) == "mask-only"
    dets = detect_folder(model, tmp_path / "images", ["background", "Small Car", "Bus"], torch.device("cpu"))
    assert len(dets) == 1 and dets[0]["image"] == "7_0" and dets[0]["class"] == "Small Car"
    assert iou(dets[0]["poly"], [[0, 0], [16, 0], [16, 16], [0, 16]]) > 0.8
    model.forward_with_tokens = lambda x: (model(x), torch.zeros(x.shape[0], 3, 4))
    model.presence_head = ClassPresenceMLP(4, 8)
    assert scoring_mode(model) == "mask×presence"
    dets2 = detect_folder(model, tmp_path / "images", ["background", "Small Car", "Bus"], torch.device("cpu"))
    assert 0 < dets2[0]["score"] < dets[0]["score"]  # multiplied by a presence probability < 1
