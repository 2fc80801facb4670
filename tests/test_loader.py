"""The input pipeline: uint8 items, deterministic step batches, device-side normalise / pad / flip."""

from __future__ import annotations

import numpy as np
import torch
from conftest import write_blocky_dataset

from mopeft.data.loading.loader import SegmentationPairs, StepBatchSampler, batch_indices, make_loader
from mopeft.data.loading.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    flip_content,
    preprocess_image,
    preprocess_label,
    to_model_input,
)
from mopeft.data.prepared.units import load_unit


def test_sampler_yields_exactly_the_step_batches_from_the_resume_step():
    sampler = StepBatchSampler(num_items=7, batch_size=3, seed=5, start=4, steps=10)
    assert list(sampler) == [batch_indices(7, 3, t, 5) for t in range(4, 10)] and len(sampler) == 6


def test_workers_deliver_the_same_batches_as_the_main_process(tmp_path):
    ds = write_blocky_dataset(tmp_path, n_train=5, n_test=1)
    data = SegmentationPairs(load_unit(ds, "main").train, 96)
    batches = {}
    for workers in (0, 2):
        loader = make_loader(data, StepBatchSampler(len(data), 2, 1, 0, 6), workers=workers)
        batches[workers] = list(loader)
    for a, b in zip(batches[0], batches[2], strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["indices"], b["indices"])
    first = batches[0][0]
    assert first["images"].dtype == torch.uint8 and first["images"].shape == (2, 3, 96, 96)
    assert first["labels"].dtype == torch.uint8


def test_device_side_input_equals_the_single_image_preprocessing(tmp_path):
    """Batch path (uint8 collate + to_model_input) == preprocess_image, which evaluation also uses."""
    ds = write_blocky_dataset(tmp_path, n_train=3, n_test=1, size=(40, 56))
    data = SegmentationPairs(load_unit(ds, "main").train, 96)
    batch = next(iter(make_loader(data, batch_size=3)))
    x = to_model_input(batch["images"], batch["sizes"])
    for i in range(3):
        image, label = data.load_raw(i)
        want, hw = preprocess_image(image, 96)
        assert torch.equal(x[i], want) and tuple(batch["sizes"][i].tolist()) == hw
        assert torch.equal(batch["labels"][i].long(), preprocess_label(label, 96))
    # Independent check of the normalisation and the zero padding: 40x56 -> 69x96 content.
    h, w = batch["sizes"][0].tolist()
    assert (h, w) == (69, 96) and (x[:, :, h:] == 0).all()
    raw = batch["images"][0, :, :h, :w].float()
    mean, std = torch.tensor(PIXEL_MEAN).view(3, 1, 1), torch.tensor(PIXEL_STD).view(3, 1, 1)
    assert torch.allclose(x[0, :, :h, :w], (raw - mean) / std)


def test_flip_mirrors_the_content_and_keeps_padding_right_and_bottom():
    """A non-square sample flipped: content mirrored in place, padding where evaluation has it."""
    label = torch.full((1, 8, 8), 255, dtype=torch.uint8)
    label[0, :5, :6] = torch.arange(30, dtype=torch.uint8).view(5, 6)
    image = label[:, None].expand(1, 3, 8, 8).clone()
    sizes, flip = torch.tensor([[5, 6]]), torch.tensor([True])
    got_label = flip_content(label, sizes, flip)
    assert torch.equal(got_label[0, :5, :6], label[0, :5, :6].flip(-1))
    assert (got_label[0, :, 6:] == 255).all() and (got_label[0, 5:] == 255).all()
    x = to_model_input(image, sizes, flip)
    assert (x[0, :, :, 6:] == 0).all() and (x[0, :, 5:] == 0).all()
    # Image and label stay aligned: the pixel value (= its label id) follows the label.
    expected = (got_label[0, :5, :6].float() - PIXEL_MEAN[0]) / PIXEL_STD[0]
    assert torch.allclose(x[0, 0, :5, :6], expected)
    assert torch.equal(flip_content(label, sizes, torch.tensor([False])), label)


def test_items_are_uint8_and_resized_only_when_needed(tmp_path):
    ds = write_blocky_dataset(tmp_path, n_train=1, n_test=1, size=(96, 64))
    item = SegmentationPairs(load_unit(ds, "main").train, 96)[0]
    image, label = SegmentationPairs(load_unit(ds, "main").train, 96).load_raw(0)
    assert item["image"].dtype == torch.uint8 and item["input_size"] == (96, 64)
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), image)  # already 96 long: untouched
    assert np.array_equal(item["label"].numpy(), label)
