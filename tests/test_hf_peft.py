"""The HF peft family (``peft_<x>``): any peft tuner on SAM's encoder, trained and counted like the
study's methods. A new tuner is one line of ``TUNERS`` (the same entry as the config's peft_methods)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from mopeft.errors import InputError
from mopeft.methods.build import build_model
from mopeft.methods.registry import (
    METHOD_SPECS,
    is_peft_method,
    method_spec,
    peft_method_options,
    peft_set_args,
)

pytest.importorskip("peft")

from peft.tuners.tuners_utils import BaseTunerLayer

from mopeft.measure.params import method_parameter_counts
from mopeft.methods.checkpoint import build_from_config, load_model, model_config, save_model
from mopeft.train.losses import segmentation_loss
from mopeft.train.optim import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
K, SIZE = 3, 96
# One line per tuner: (method name, its config peft_methods entry).
TUNERS = [
    ("peft_lora", {"tuner": "LORA", "options": {"r": 4, "lora_alpha": 8}}),
    ("peft_dora", {"tuner": "LORA", "options": {"r": 4, "use_dora": True}}),
    ("peft_ia3", {"tuner": "IA3", "options": {"feedforward_modules": ["mlp.lin2"]}, "target_modules": ["qkv", "mlp.lin2"]}),  # noqa: E501
    ("peft_loha", {"tuner": "LOHA", "options": {"r": 4, "alpha": 4}}),
    ("peft_lokr", {"tuner": "LOKR", "options": {"r": 4}, "target_modules": ["qkv", "proj"]}),
]  # fmt: skip
IDS = [name for name, _ in TUNERS]


def _build(name: str, entry: dict, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("tiny", K, name, peft_method_options(name, entry), image_size=SIZE)
    return model.to(dtype)


def _images(dtype: torch.dtype = torch.float64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, SIZE, SIZE, generator=g, dtype=dtype)


def _labels(seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K, (2, SIZE, SIZE), generator=g)


def _adapter_names(model: torch.nn.Module) -> set[str]:
    """Parameters inside peft's adapter containers, found from peft's own layer declarations."""
    names = set()
    for mname, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            for attr in module.adapter_layer_names:
                part = getattr(module, attr, None)
                if isinstance(part, torch.nn.Module):
                    names |= {n for n, _ in part.named_parameters(prefix=f"{mname}.{attr}")}
    return names


def _perturb_adapters(model: torch.nn.Module, seed: int = 3) -> None:
    """Non-zero adapter weights (LoRA's B starts at zero, which would hide the adapter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in _adapter_names(model):
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))


# ------------------------------------------------------------------------------------ the registry
def test_the_family_is_a_name_prefix_and_its_options_are_canonical():
    assert is_peft_method("peft_dora") and not is_peft_method("peft_") and not is_peft_method("lora")
    assert not any(is_peft_method(m) for m in METHOD_SPECS)  # the study's methods stay apart
    a = peft_method_options("peft_x", {"tuner": "lora", "options": {"use_dora": True, "r": 8}})
    b = method_spec("peft_x").options(
        {"tuner": "LORA", "target_modules": " qkv ", "peft_options": '{"r": 8, "use_dora": true}'}
    )
    assert a == b == {"tuner": "LORA", "target_modules": "qkv", "peft_options": '{"r":8,"use_dora":true}'}
    # --set words give the same options back (the DAG passes them to `mopeft train`)
    words = peft_set_args(a)
    sets = dict(w.split("=", 1) for w in words[1::2])
    assert method_spec("peft_x").options(sets) == a


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "option tuner is not set"),
        ({"tuner": "LORA", "options": {"target_modules": ["qkv"]}}, "must not set ['target_modules']"),
        ({"tuner": "LORA", "target_modules": []}, None),  # empty list: the default target
    ],
)
def test_config_entry_mistakes_name_the_key(entry, message):
    if message is None:
        assert peft_method_options("peft_x", entry)["target_modules"] == "qkv"
        return
    with pytest.raises(InputError, match=r"config peft_methods\.peft_x: .*" + message.replace("[", r"\[")):
        peft_method_options("peft_x", entry)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tuner": "NOPE"}, r"unknown or unsupported peft tuner 'NOPE'; known: .*LOHA.*LORA"),
        ({"tuner": "ADALORA"}, r"ADALORA is not supported here: .*update_and_allocate"),
        ({"tuner": "LORA", "peft_options": '{"rank": 4}'}, r"LoraConfig has no option\(s\) \['rank'\]; known: .*alpha"),  # noqa: E501
        ({"tuner": "LORA", "target_modules": "nothing_here"}, r"could not adapt \['nothing_here'\]"),
        ({"tuner": "LORA", "peft_options": "{r: 4"}, r"option peft_options is not JSON"),
    ],
)  # fmt: skip
def test_bad_tuner_configs_are_input_errors(options, message):
    with pytest.raises(InputError, match=message):
        build_model("tiny", K, "peft_bad", options, image_size=SIZE)


def test_peft_not_installed_is_an_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(InputError, match=r"peft is not installed: pip install 'mopeft\[peft\]'"):
        build_model("tiny", K, "peft_lora", {"tuner": "LORA"}, image_size=SIZE)


# ------------------------------------------------------------------------------------ every tuner
@pytest.mark.parametrize(("name", "entry"), TUNERS, ids=IDS)
def test_only_adapters_and_the_decoder_train(name, entry):
    model = _build(name, entry)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = _adapter_names(model)
    decoder = {n for n, _ in model.named_parameters() if n.startswith("mask_decoder.")}
    assert adapters and all(n.startswith("image_encoder.blocks.") for n in adapters)
    assert trainable == adapters | decoder
    # Every block runs the project's attention path: PEFTBlock, with peft's layers inside it.
    assert all(type(b).__name__ == "PEFTBlock" for b in model.image_encoder.blocks)
    wrapped = {n.split(".block.", 1)[1] for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
    full = {"qkv": "attn.qkv", "proj": "attn.proj", "mlp.lin1": "mlp.lin1", "mlp.lin2": "mlp.lin2"}
    assert wrapped == {full[t] for t in entry.get("target_modules", ["qkv"])}
    assert model.image_encoder.patch_embed.proj.__class__ is torch.nn.Conv2d  # `proj` never reaches it


@pytest.mark.parametrize(("name", "entry"), TUNERS, ids=IDS)
def test_training_steps_change_the_output(name, entry):
    """The training path: the project's loss and optimiser; adapters get gradients, two steps move
    the encoder output (the encoder trains, so the frozen-embedding cache must stay off)."""
    from mopeft.train.encoder_cache import encoder_is_frozen

    model = _build(name, entry)
    model.train()
    assert not encoder_is_frozen(model)
    x, y = _images(torch.float32), _labels()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, 1e-2, 1e-4, "cpu")
    with torch.no_grad():
        before = model.encode(x).clone()
    for _ in range(2):
        opt.zero_grad()
        loss = segmentation_loss(model(x), y)
        loss.backward()
        grads = [p.grad for n, p in model.named_parameters() if n in _adapter_names(model)]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        opt.step()
    with torch.no_grad():
        after = model.encode(x)
    assert (after - before).abs().max() > 1e-6


@pytest.mark.parametrize(("name", "entry"), TUNERS, ids=IDS)
def test_checkpoint_round_trip_is_exact(tmp_path, name, entry):
    """Only the trainable tensors are saved; the tuner is rebuilt from the model config alone."""
    options = peft_method_options(name, entry)
    cfg = model_config("tiny", K, name, options, SIZE, None, None, init_seed=5)
    model = build_from_config(cfg)
    _perturb_adapters(model)
    path = tmp_path / "model.safetensors"
    save_model(path, model, cfg)
    loaded = load_model(path)
    model.eval()
    x = _images(torch.float32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.method == name and loaded.method_options == options


@pytest.mark.parametrize(("name", "entry"), TUNERS, ids=IDS)
def test_params_counts_equal_a_direct_count(name, entry):
    options = peft_method_options(name, entry)
    counts = method_parameter_counts("tiny", name, options, K)
    model = _build(name, entry, torch.float32)
    direct = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert counts["trainable"] == sum(direct.values())
    assert counts["encoder_peft"] == sum(v for n, v in direct.items() if n.startswith("image_encoder."))
    assert counts["encoder_full"] == 0 and counts["method"] == name and counts["method_options"] == options


def test_peft_lora_count_follows_the_formula():
    """An independent count: LoRA of rank r on qkv (C -> 3C) is r (C + 3C) per block."""
    counts = method_parameter_counts("vit_b", "peft_lora", peft_method_options(*TUNERS[0]), K)
    assert counts["encoder_peft"] == 12 * 4 * (768 + 3 * 768)


# ------------------------------------------------------------------------------------ LoRA equality
def _lora_pair(r: int = 4, alpha: float = 6.0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """This project's `lora` (rank r, alpha) and the peft family's LoRA on qkv holding the same
    update: rank 2r, A = [A_q; A_v], B with B_q in the q rows x first r columns and B_v in the v rows
    x last r columns (k rows zero), lora_alpha = 2 alpha (peft scales by lora_alpha / 2r = alpha / r).
    The mapping follows mopeft/peft/lora.py: q += (alpha/r) B_q A_q h, v += (alpha/r) B_v A_v h."""
    torch.manual_seed(0)
    ours = build_model("tiny", K, "lora", {"r": r, "alpha": alpha}, image_size=SIZE).double()
    entry = {"tuner": "LORA", "options": {"r": 2 * r, "lora_alpha": 2 * alpha}}
    torch.manual_seed(0)
    options = peft_method_options("peft_lora", entry)
    theirs = build_model("tiny", K, "peft_lora", options, image_size=SIZE).double()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for ob, tb in zip(ours.image_encoder.blocks, theirs.image_encoder.blocks, strict=True):
            lora, qkv = ob.lora, tb.block.attn.qkv
            c = lora.a_q.weight.shape[1]
            for lin in (lora.a_q, lora.b_q, lora.a_v, lora.b_v):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=torch.float64) * 0.1)
            qkv.lora_A["default"].weight.copy_(torch.cat([lora.a_q.weight, lora.a_v.weight]))
            b = torch.zeros(3 * c, 2 * r, dtype=torch.float64)
            b[:c, :r] = lora.b_q.weight
            b[2 * c :, r:] = lora.b_v.weight
            qkv.lora_B["default"].weight.copy_(b)
            assert qkv.scaling["default"] == lora.scaling == alpha / r
    # Same frozen base (same seed, same build order), asserted rather than assumed.
    frozen = {n: p for n, p in ours.named_parameters() if "lora" not in n}
    other = {n.replace(".base_layer", ""): p for n, p in theirs.named_parameters() if "lora_" not in n}
    assert frozen.keys() == other.keys()
    assert all(torch.equal(p, other[n]) for n, p in frozen.items())
    return ours, theirs


def test_peft_lora_equals_the_projects_lora_in_fp64():
    ours, theirs = _lora_pair()
    x = _images()
    g = torch.Generator().manual_seed(9)
    weight = torch.randn(ours.encode(x).shape, generator=g, dtype=torch.float64)
    results = []
    for model in (ours, theirs):
        image = x.clone().requires_grad_(True)
        out = model.encode(image)
        (out * weight).sum().backward()
        results.append((out.detach(), image.grad))
    (out_a, gx_a), (out_b, gx_b) = results
    assert out_a.abs().max() > 0.1  # a real signal, not zeros compared with zeros
    assert (out_a - out_b).abs().max() <= 1e-12
    assert (gx_a - gx_b).abs().max() <= 1e-12
    for ob, tb in zip(ours.image_encoder.blocks, theirs.image_encoder.blocks, strict=True):
        lora, qkv = ob.lora, tb.block.attn.qkv
        r, c = lora.r, lora.a_q.weight.shape[1]
        ga, gb = qkv.lora_A["default"].weight.grad, qkv.lora_B["default"].weight.grad
        assert lora.a_q.weight.grad.abs().max() > 0
        assert (ga[:r] - lora.a_q.weight.grad).abs().max() <= 1e-12
        assert (ga[r:] - lora.a_v.weight.grad).abs().max() <= 1e-12
        assert (gb[:c, :r] - lora.b_q.weight.grad).abs().max() <= 1e-12
        assert (gb[2 * c :, r:] - lora.b_v.weight.grad).abs().max() <= 1e-12


# ------------------------------------------------------------------------------------ the DAG
def _config(*extra: dict) -> dict:
    from mopeft.plan.jobs import load_config, merged

    base = load_config([ROOT / "config" / "demo.yaml", ROOT / "config" / "peft-tuners.yaml"])
    return merged(base, *extra)


def test_the_demo_add_on_declares_three_tuners_that_join_the_run():
    from mopeft.plan.jobs import run_jobs
    from mopeft.plan.workflow import Workflow

    wf = Workflow(_config())
    peft = ["peft_dora", "peft_ia3", "peft_loha"]
    assert list(wf.peft) == peft and wf.main_methods[-3:] == peft
    assert set(peft) <= set(wf.wildcard_constraints()["method"].split("|"))
    # Their options reach `mopeft train` as --set words, which give the options back.
    words = wf.set_args(SimpleNamespace(method="peft_dora", variant="default"))
    sets = dict(w.split("=", 1) for w in words[1::2])
    assert method_spec("peft_dora").options(sets) == wf.peft_options["peft_dora"]
    assert json.loads(sets["peft_options"]) == {"r": 8, "lora_alpha": 8, "use_dora": True}
    assert wf.set_args(SimpleNamespace(method="lora", variant="default")) == []
    # Table 4.4 (beyond=True) takes their cells, Table 4.3 does not.
    t44 = wf.table_inputs(SimpleNamespace(name="4_4"))["cells"]
    t43 = wf.table_inputs(SimpleNamespace(name="4_3"))["cells"]
    assert {p.split("/")[4] for p in t44} >= set(peft) and not {p.split("/")[4] for p in t43} & set(peft)
    # The code hash of a peft cell covers the family's module; the resource plan builds it with options.
    assert wf.code("train", methods=("peft_dora",)) != wf.code("train", methods=("lora",))
    jobs = [j for j in run_jobs(wf.config) if j.method == "peft_ia3"]
    assert jobs and all(dict(j.options) == wf.peft_options["peft_ia3"] for j in jobs)


def test_a_changed_tuner_config_changes_the_train_params():
    from mopeft.plan.workflow import Workflow

    wc = SimpleNamespace(method="peft_dora", variant="default")
    a = Workflow(_config()).set_args(wc)
    b = Workflow(_config({"peft_methods": {"peft_dora": {"options": {"r": 4}}}})).set_args(wc)
    assert a != b and "peft_options" in b[1] and '"r":4' in b[1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"main": {"methods": ["peft_nope"]}}, r"config main\.methods: unknown method\(s\) \['peft_nope'\]"),
        (
            {"detection": {"methods": ["baseline", "peft_dora"]}},
            r"detection\.methods: \['peft_dora'\] are peft_",
        ),
        ({"peft_methods": {"peft_dora": {"target_modules": ["attn"]}}}, r"peft_dora\.target_modules"),
        ({"peft_methods": {"dora": {"tuner": "LORA"}}}, r"peft_methods: .*'dora'"),
    ],
)  # fmt: skip
def test_config_mistakes_name_the_key(extra, message):
    from mopeft.plan.jobs import SCHEMA, validate_config
    from mopeft.plan.workflow import ConfigError, Workflow

    config = _config(extra)
    with pytest.raises((ConfigError, InputError), match=message):
        validate_config(config, ROOT / SCHEMA)
        Workflow(config)


def test_the_schema_targets_are_the_registry_targets():
    from mopeft.methods.registry import PEFT_TARGETS
    from mopeft.plan.jobs import SCHEMA

    doc = yaml.safe_load((ROOT / SCHEMA).read_text())
    entry = doc["properties"]["peft_methods"]["patternProperties"]["^peft_[a-z0-9_]+$"]
    assert tuple(entry["properties"]["target_modules"]["items"]["enum"]) == PEFT_TARGETS


# ------------------------------------------------------------------------------------ Table 4.4
def _cell(root, dataset: str, method: str, miou: float, options: dict | None = None):
    path = root / "cells" / dataset / method / "default" / "seed0" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset": dataset, "method": method, "variant": "default", "seed": 0,
        "method_options": options or {}, "miou": miou, "per_class_iou": {}, "combine": "single",
        "units": {"main": {"miou": miou}}, "num_images": 4, "gates": [], "synthetic": True,
        "weights": "random init", "arch": "tiny", "image_size": 96,
    }  # fmt: skip
    path.write_text(json.dumps(record))
    return path


def test_table_4_4_shows_peft_columns_marked_and_leaves_the_study_columns_alone(tmp_path):
    import pandas as pd

    from mopeft.cli import main as cli_main

    dora = peft_method_options("peft_dora", {"tuner": "LORA", "options": {"r": 8, "use_dora": True}})
    values = {"kvasir_instrument": (60.0, 61.5), "floodnet": (40.0, 39.0)}
    study = [_cell(tmp_path, d, "lora", v) for d, (v, _) in values.items()]
    peft = [_cell(tmp_path, d, "peft_dora", v, dora) for d, (_, v) in values.items()]
    config = tmp_path / "config.yaml"
    declared = {"peft_dora": {"tuner": "LORA", "label": "DoRA"}}
    config.write_text(yaml.safe_dump({"main": {"methods": ["lora", "peft_dora"]}, "peft_methods": declared}))
    plain = tmp_path / "plain.yaml"
    plain.write_text("main: {methods: [lora]}\n")
    with_peft, without = tmp_path / "with" / "table_4_4", tmp_path / "without" / "table_4_4"
    args = ["table", "4.4", "--bootstrap", "0"]
    for cells, cfg, out in ((study + peft, config, with_peft), (study, plain, without)):
        assert cli_main([*args, "--cells", *map(str, cells), "--config", str(cfg), "--out", str(out)]) == 0
    a, b = pd.read_csv(with_peft.with_suffix(".csv")), pd.read_csv(without.with_suffix(".csv"))
    assert list(a.columns) == [*b.columns, "peft_dora", "peft_dora_paper", "peft_dora_diff"]
    pd.testing.assert_frame_equal(a[b.columns], b)  # the study's columns unchanged
    kvasir = a.set_index("dataset").loc["kvasir_instrument"]
    assert kvasir["peft_dora"] == 61.5 and pd.isna(kvasir["peft_dora_paper"])
    md = with_peft.with_suffix(".md").read_text()
    assert "| DoRA§ " in md
    note = "§ Beyond the study (config peft_methods; no study value): DoRA§ = HF peft LORA"
    assert note + ' {"r":8,"use_dora":true} on qkv.' in md
    assert "§" not in without.with_suffix(".md").read_text()


def test_the_resource_model_traces_a_peft_training_step():
    """`mopeft plan` builds models under FakeTensorMode; peft's adapters must build there too, and
    the traced step costs more than decoder-only fine-tuning (the encoder trains)."""
    from mopeft.measure.step_model import StepSpec, trace_train

    options = tuple(sorted(peft_method_options(*TUNERS[1]).items()))  # DoRA
    spec = dict(num_classes=K, arch="tiny", image_size=SIZE, batch_size=2, precision="fp32")
    dora = trace_train(StepSpec("peft_dora", options=options, **spec))
    decoder = trace_train(StepSpec("decoder_ft", **spec))
    assert decoder.frozen_encoder and not dora.frozen_encoder  # no embedding cache for DoRA
    assert dora.flops(False) > decoder.flops(False) > 0


def test_train_and_evaluate_through_the_cli(tmp_path):
    """`mopeft train` as the DAG calls it (the --set words of the config entry), then evaluate."""
    from conftest import write_blocky_dataset

    from mopeft.cli import main as cli_main
    from mopeft.methods.checkpoint import read_checkpoint

    name, entry = TUNERS[2]  # IA³ on qkv and lin2
    options = peft_method_options(name, entry)
    data = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=2)
    out = tmp_path / "cell"
    args = ["train", "--data", str(data), "--method", name, *peft_set_args(options), "--arch", "tiny"]
    assert cli_main([*args, "--steps", "3", "--batch-size", "2", "--out", str(out)]) == 0
    payload = read_checkpoint(out / "model.safetensors")
    assert payload["config"]["method_options"] == options
    assert any(".ia3_l." in k for k in payload["trainable"])
    assert not any("base_layer" in k for k in payload["trainable"])  # the frozen base is not saved
    model_file = str(out / "model.safetensors")
    assert cli_main(["evaluate", "--model", model_file, "--data", str(data), "--out", str(out / "eval")]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["method"] == name and metrics["method_options"] == options
