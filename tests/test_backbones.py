"""The larger SAM backbones (ViT-L, ViT-H): the registry against segment-anything's own builders,
exact parameter counts through `mopeft params`, `mopeft weights --arch`, the config example and the
resource model's step traces. Everything big is built on the meta device or as fake tensors."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml
from segment_anything import sam_model_registry
from test_flops import sam_encoder_macs

from mopeft.cli import build_parser, main
from mopeft.errors import InputError
from mopeft.measure.step_model import StepSpec, trace_eval
from mopeft.methods.registry import METHOD_SPECS
from mopeft.model.arch import ARCHS, build_sam_parts
from mopeft.model.weights import KNOWN_WEIGHTS, download_official, official_checkpoint

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ("vit_b", "vit_l", "vit_h")
LARGE = ("vit_l", "vit_h")


def _meta_sam(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return sam_model_registry[name](checkpoint=None)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", OFFICIAL)
def test_registry_builds_exactly_segment_anythings_modules(name):
    """Same parameter names and shapes as `sam_model_registry[name]`, so the official checkpoint
    loads strictly (its state dict is that model's)."""
    ref = _meta_sam(name)
    with torch.device("meta"):
        parts = build_sam_parts(ARCHS[name])
    for ours, theirs in zip(parts, (ref.image_encoder, ref.prompt_encoder, ref.mask_decoder), strict=True):
        assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
            k: tuple(v.shape) for k, v in theirs.state_dict().items()
        }
    spec = ARCHS[name]
    assert tuple(ref.image_encoder.blocks[0].attn.qkv.weight.shape) == (3 * spec.embed_dim, spec.embed_dim)
    globals_ = tuple(i for i, b in enumerate(ref.image_encoder.blocks) if b.window_size == 0)
    assert globals_ == spec.global_attn_indexes and len(ref.image_encoder.blocks) == spec.depth


@pytest.mark.parametrize("name", LARGE)
def test_mopeft_params_equals_segment_anythings_counts(name, capsys):
    ref = _meta_sam(name)
    assert main(["params", "--arch", name, "--method", "full_ft", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["arch"] == name
    assert counts["sam_reference_total"] == _count(ref)  # ViT-L 312,342,832; ViT-H 641,090,608
    assert counts["encoder_full"] == _count(ref.image_encoder)  # full_ft trains the whole encoder


def test_every_method_is_counted_on_vit_l():
    from mopeft.measure.params import method_parameter_counts

    spec = ARCHS["vit_l"]
    b = {m: method_parameter_counts("vit_b", m) for m in METHOD_SPECS}
    lg = {m: method_parameter_counts("vit_l", m) for m in METHOD_SPECS}
    for m in METHOD_SPECS:
        assert lg[m]["arch"] == "vit_l" and lg[m]["trainable"] > 0
        if lg[m]["encoder_peft"] or lg[m]["encoder_full"]:  # anything in the encoder is wider/deeper
            assert lg[m]["trainable"] > b[m]["trainable"], m
        else:  # baseline / decoder_ft: the decoder is the same on every SAM backbone
            assert lg[m]["trainable"] == b[m]["trainable"], m
    assert lg["lora"]["encoder_peft"] == spec.depth * 4 * 8 * spec.embed_dim == 786_432  # r 8 on q, v
    assert lg["vpt_deep"]["prefix_folded"] == spec.depth * 20 * spec.embed_dim
    assert lg["full_ft"]["encoder_full"] == _count(_meta_sam("vit_l").image_encoder)


@pytest.mark.parametrize("command", ["params", "flops", "weights", "train"])
def test_every_arch_option_offers_the_registry(command):
    argv = [command, "--arch", "vit_h"]
    parser, _ = build_parser(argv)
    action = next(a for sub in parser._subparsers._group_actions for a in sub.choices[command]._actions
                  if "--arch" in a.option_strings)  # fmt: skip
    assert set(action.choices) == set(ARCHS)


def test_schema_enums_list_the_registry():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]
    assert set(props["model"]["properties"]["arch"]["enum"]) == set(ARCHS)
    assert set(props["efficiency"]["properties"]["params_arch"]["enum"]) == set(ARCHS)


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_checkpoints_are_pinned(name):
    ref = official_checkpoint(name)
    assert ref.url == f"https://dl.fbaipublicfiles.com/segment_anything/{ref.filename}"
    assert ref.filename.startswith(f"sam_{name}_") and len(ref.sha256) == 64
    assert int(ref.sha256, 16) >= 0 and KNOWN_WEIGHTS[ref.sha256] == ref.label
    with pytest.raises(InputError, match="tiny"):
        official_checkpoint("tiny")


@pytest.mark.parametrize("name", LARGE)
def test_weights_offline_names_the_url_file_and_digest(name, tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert main(["weights", "--arch", name, "--out", str(tmp_path / "weights")]) == 2
    err = capsys.readouterr().err.strip()
    ref = official_checkpoint(name)
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert ref.url in err and str(tmp_path / "weights" / ref.filename) in err and ref.sha256 in err


def test_weights_refuses_a_file_that_is_not_the_official_one(tmp_path):
    dest = tmp_path / official_checkpoint("vit_l").filename
    dest.write_bytes(b"not SAM ViT-L")
    with pytest.raises(InputError, match="sha256 differs"):
        download_official("vit_l", tmp_path)


def test_vit_l_config_runs_the_main_table_on_vit_l():
    from mopeft.plan.jobs import load_config, run_jobs

    config = load_config([ROOT / "config/config.yaml", ROOT / "config/vit_l.yaml"])
    study = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    ref = official_checkpoint("vit_l")
    assert config["model"]["arch"] == "vit_l" and config["run"] != study["run"]
    assert config["model"]["weights"] == {"path": f"weights/{ref.filename}", "sha256": ref.sha256}
    jobs = run_jobs(config)
    seg = [d for d in study["datasets"] if d != study["detection"]["dataset"]]
    main_cells = {(d, m) for d in seg for m in study["main"]["methods"]}
    assert {(j.dataset, j.method) for j in jobs} == main_cells
    assert {j.variant for j in jobs} == {"default"} and {j.rule for j in jobs} == {"train", "evaluate"}


def test_encoder_macs_at_1024_of_the_large_backbones():
    # `mopeft flops --arch vit_l|vit_h --method baseline --image-size 1024` (fvcore, real weights)
    # traced exactly these integers: 1493.85 and 2982.22 GMAC, against ViT-B's 486.42.
    assert sam_encoder_macs(ARCHS["vit_l"], 1024) == 1_493_846_786_048
    assert sam_encoder_macs(ARCHS["vit_h"], 1024) == 2_982_219_137_024


def test_step_model_traces_the_large_encoders_at_their_size():
    """The resource model's evaluation trace (fake tensors: no memory) at 128² has the encoder FLOPs
    of each backbone's own depth and width: 2 × the hand count of test_flops (which also counts
    LayerNorm, ~0.05 %), and its peak holds each model's parameters."""
    for name in OFFICIAL:
        spec = ARCHS[name]
        cost = trace_eval(StepSpec("baseline", 2, arch=name, image_size=128, batch_size=1), (128, 128))
        flops = cost.pieces["encoder"].total_flops
        assert flops == pytest.approx(2 * sam_encoder_macs(spec, 128), rel=2e-3), name
        assert cost.peak > 4 * _count(_meta_sam(name).image_encoder), name  # fp32 weights are resident
