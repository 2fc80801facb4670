"""HF peft methods (``peft_<x>``, config peft_methods) are counted by `params`, `flops` and `bench`
like the study's methods, their rules pass their options, Table 4.5 and the figures label them as
Table 4.4 does, and `mopeft plan` traces LoHa/LoKr (whose forward draws ``torch.rand(1)``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from mopeft.errors import InputError
from mopeft.methods.registry import peft_method_options

pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
K, SIZE = 3, 96
# (method, config peft_methods entry): the tuners whose FLOPs need this project's handles, and two
# that need none (LoRA: matmuls only; IA³: one elementwise scale, not counted by convention).
TUNERS = {
    "peft_lora": {"tuner": "LORA", "options": {"r": 4, "lora_alpha": 8}, "target_modules": ["qkv", "mlp.lin1"]},  # noqa: E501
    "peft_dora": {"tuner": "LORA", "options": {"r": 4, "use_dora": True}},
    "peft_loha": {"tuner": "LOHA", "options": {"r": 4, "alpha": 4}, "target_modules": ["qkv", "mlp.lin1"]},
    "peft_lokr": {"tuner": "LOKR", "options": {"r": 4}, "target_modules": ["qkv", "proj"]},
    "peft_ia3": {"tuner": "IA3", "options": {"feedforward_modules": ["mlp.lin2"]}, "target_modules": ["qkv", "mlp.lin2"]},  # noqa: E501
}  # fmt: skip


def _options(name: str) -> dict[str, str]:
    return peft_method_options(name, TUNERS[name])


# ------------------------------------------------------------------------------------ FLOPs
def _tokens(block: int, module: str) -> int:
    """Tokens a linear layer of encoder block ``block`` sees, from the architecture alone: SAM's
    windowed blocks pad the patch grid to whole windows for attention (qkv, proj); the MLP and the
    global blocks see the grid."""
    from mopeft.model.arch import ARCHS

    spec = ARCHS["tiny"]
    grid = SIZE // spec.patch_size
    windowed = spec.window_size > 0 and block not in spec.global_attn_indexes
    if windowed and module.startswith("attn."):
        side = math.ceil(grid / spec.window_size) * spec.window_size
        return side * side
    return grid * grid


def _hand_count(name: str, model: torch.nn.Module) -> int:
    """Extra multiply-adds of a tuner over the plain model, by hand from its layers' shapes
    (peft's forward, eval mode, one image): what the adapter adds to each wrapped linear layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    total = 0
    for path, layer in model.image_encoder.named_modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        # blocks.<i>.block.<module>: the study's PEFTBlock around SAM's block (mopeft.peft.block)
        block, module = int(path.split(".")[1]), path.split(".block.", 1)[1]
        n = _tokens(block, module)
        base = layer.get_base_layer()
        i, o = base.in_features, base.out_features
        tuner = TUNERS[name]["tuner"]
        if tuner == "LORA":
            r = layer.lora_A["default"].out_features
            total += n * (i * r + r * o)  # lora_B(lora_A(x))
            if TUNERS[name]["options"].get("use_dora"):
                # The LoRA weight through its layers on an identity (i rows), then its row norms.
                total += i * i * r + i * r * o + o * i
        elif tuner == "LOHA":
            r = layer.hada_w1_a["default"].shape[1]
            # (w1a @ w1b) * (w2a @ w2b): two (o x r) @ (r x i) products and the Hadamard product,
            # then the input through the delta weight.
            total += 2 * o * r * i + o * i + n * i * o
        elif tuner == "LOKR":
            for side in ("w1", "w2"):
                if "default" in getattr(layer, f"lokr_{side}"):
                    continue  # a full factor: no product
                a, b = (
                    getattr(layer, f"lokr_{side}_a")["default"],
                    getattr(layer, f"lokr_{side}_b")["default"],
                )
                total += a.shape[0] * a.shape[1] * b.shape[1]  # a low-rank factor: a @ b
            total += o * i + n * i * o  # kron(w1, w2): one product per element; then the input through it
        elif tuner != "IA3":  # IA³: elementwise scales only, which fvcore's convention does not count
            raise AssertionError(tuner)
    return total


@pytest.mark.parametrize("name", list(TUNERS))
def test_flops_of_a_peft_tuner_are_the_plain_model_plus_a_hand_count(name):
    from mopeft.measure.flops import model_flops

    options = _options(name)
    base = model_flops("tiny", "baseline", {}, SIZE, K)
    tuned = model_flops("tiny", name, options, SIZE, K)
    from mopeft.methods.build import build_model

    model = build_model("tiny", K, name, dict(options), image_size=SIZE)
    expected = _hand_count(name, model)
    assert tuned["macs"]["image_encoder"] - base["macs"]["image_encoder"] == expected
    assert tuned["macs"]["mask_decoder"] == base["macs"]["mask_decoder"]
    if name != "peft_ia3":
        assert expected > 0
    assert tuned["method_options"] == options


def test_hada_weight_macs_by_hand():
    from mopeft.measure.flops import hada_weight_macs

    # (6 x 2) @ (2 x 5) twice: 60 multiply-adds each, then 30 products elementwise.
    assert hada_weight_macs([6, 2], [2, 5], [6, 2], [2, 5]) == 60 + 60 + 30


def test_params_and_flops_cli_take_the_options(tmp_path, capsys):
    from mopeft.cli import main as cli_main
    from mopeft.methods.registry import peft_set_args

    options = _options("peft_loha")
    args = ["--arch", "tiny", "--method", "peft_loha", "--num-classes", str(K), *peft_set_args(options)]
    assert cli_main(["params", *args, "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["method_options"] == options and counts["encoder_peft"] > 0
    out = tmp_path / "flops.json"
    assert cli_main(["flops", *args, "--image-size", str(SIZE), "--json", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["method_options"] == options


# ------------------------------------------------------------------------------------ bench
def test_bench_times_a_peft_method_built_with_its_options():
    from mopeft.commands.bench import method_sets
    from mopeft.measure.bench import BenchConfig, run_bench
    from mopeft.measure.params import method_parameter_counts
    from mopeft.methods.registry import peft_set_args

    options = _options("peft_loha")
    words = peft_set_args(options)
    sets = method_sets([f"peft_loha:{w}" for w in words[1::2]])
    assert sets == {"peft_loha": options}
    cfg = BenchConfig(
        arch="tiny", methods=["peft_loha"], method_options=sets, image_size=SIZE, num_classes=K,
        steps=1, warmup=0, device="cpu",
    )  # fmt: skip
    result = run_bench(cfg)
    row = next(r for r in result["results"] if r["method"] == "peft_loha")
    # Trained what `mopeft params` counts with the same options (without them the build fails: no tuner).
    assert (
        row["trainable_params"] == method_parameter_counts("tiny", "peft_loha", options, K, SIZE)["trainable"]
    )
    assert result["config"]["method_options"] == {"peft_loha": options}
    assert row["merge"] == "not merged: an HF peft tuner" and row["infer_merged_ms"] is None


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["peft_loha=tuner"], "METHOD:KEY=VALUE"),
        ([":tuner=LOHA"], "METHOD:KEY=VALUE"),
        (["peft_loha:tuner"], "KEY=VALUE"),
    ],
)
def test_bench_set_mistakes_are_input_errors(sets, message):
    from mopeft.commands.bench import method_sets

    with pytest.raises(InputError, match=message):
        method_sets(sets)


def test_bench_refuses_options_of_a_method_it_does_not_time():
    from mopeft.measure.bench import BenchConfig, resolve

    with pytest.raises(InputError, match=r"--set names method\(s\) \['peft_loha'\]"):
        resolve(BenchConfig(methods=["lora"], method_options={"peft_loha": {"tuner": "LOHA"}}, device="cpu"))


# ------------------------------------------------------------------------------------ the DAG
def _config(*extra: dict) -> dict:
    from mopeft.plan.jobs import load_config, merged

    base = load_config([ROOT / "config" / "demo.yaml", ROOT / "config" / "peft-tuners.yaml"])
    return merged(base, *extra)


def test_efficiency_methods_take_peft_methods_and_their_rules_get_the_options():
    from mopeft.commands.bench import method_sets
    from mopeft.plan.workflow import Workflow

    methods = ["full_ft", "lora", "peft_dora", "peft_loha"]
    wf = Workflow(_config({"efficiency": {"methods": methods}}))
    for name in ("peft_dora", "peft_loha"):
        words = wf.method_args(SimpleNamespace(method=name))
        assert dict(w.split("=", 1) for w in words[1::2]) == wf.peft_options[name]
    assert wf.method_args(SimpleNamespace(method="lora")) == []
    words = wf.bench_args(SimpleNamespace())
    assert words[::2] == ["--set"] * (len(words) // 2)
    assert method_sets(words[1::2]) == {m: wf.peft_options[m] for m in ("peft_dora", "peft_loha")}
    # The rules hand those words on.
    rules = (ROOT / "workflow" / "rules" / "efficiency.smk").read_text()
    assert rules.count("options=wf.method_args") == 2 and "options=wf.bench_args" in rules
    assert rules.count("{params.options:q}") == 3


def test_detection_methods_still_refuse_peft_methods():
    from mopeft.plan.workflow import ConfigError, Workflow

    with pytest.raises(ConfigError, match=r"detection\.methods: \['peft_dora'\] are peft_methods"):
        Workflow(_config({"detection": {"methods": ["baseline", "peft_dora"]}}))


# ------------------------------------------------------------------------------------ Table 4.5
def _params(tmp: Path, method: str, trainable: int, enc: int, options: dict | None = None) -> Path:
    path = tmp / "params" / f"{method}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "method": method, "trainable": trainable, "sam_reference_total": 1_000_000, "encoder_peft": enc,
        "method_options": options or {},
    }  # fmt: skip
    path.write_text(json.dumps(record))
    return path


def _bench(tmp: Path, methods: list[str]) -> Path:
    path = tmp / "bench.json"
    rows = [{"method": m, "train_pct": 50.0 + i, "infer_pct": 90.0 + i} for i, m in enumerate(methods)]
    path.write_text(json.dumps({"results": rows, "device_name": "cpu", "config": {"device": "cpu"}}))
    return path


def test_table_4_5_marks_peft_rows_and_leaves_the_others_alone(tmp_path):
    from mopeft.cli import main as cli_main

    dora = peft_method_options("peft_dora", {"tuner": "LORA", "options": {"r": 8, "use_dora": True}})
    study = [_params(tmp_path, "full_ft", 900_000, 0), _params(tmp_path, "lora", 50_000, 2_400)]
    peft = [_params(tmp_path, "peft_dora", 52_000, 4_000, dora)]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"peft_methods": {"peft_dora": {"tuner": "LORA", "label": "DoRA"}}}))
    outs = {}
    runs = {"with": (study + peft, ["full_ft", "lora", "peft_dora"]), "without": (study, ["full_ft", "lora"])}
    for key, (params, methods) in runs.items():
        (tmp_path / key).mkdir()
        out, bench = tmp_path / key / "table_4_5", _bench(tmp_path / key, methods)
        args = ["table", "4.5", "--params", *map(str, params), "--bench", str(bench), "--config", str(config)]
        assert cli_main([*args, "--out", str(out)]) == 0
        outs[key] = out
    md = outs["with"].with_suffix(".md").read_text()
    assert "| DoRA§ " in md
    note = "§ Beyond the study (config peft_methods; no study value): DoRA§ = HF peft LORA"
    assert note + ' {"r":8,"use_dora":true} on qkv.' in md
    without = outs["without"].with_suffix(".md").read_text()
    assert "§" not in without and "DoRA" not in without
    # The study's rows are the same with or without a peft row.
    a = outs["with"].with_suffix(".csv").read_text().splitlines()
    b = outs["without"].with_suffix(".csv").read_text().splitlines()
    assert a[: len(b)] == b and a[len(b)].startswith("peft_dora,")


# ------------------------------------------------------------------------------------ the plan
@pytest.mark.parametrize("name", ["peft_loha", "peft_lokr"])
def test_the_resource_model_traces_tuners_that_draw_a_scalar(name):
    """LoHa's and LoKr's training forward draws ``torch.rand(1)`` (module dropout) and branches on it,
    which a fake tensor cannot; the trace draws it for real and goes on."""
    from mopeft.measure.step_model import StepSpec, trace_train

    options = tuple(sorted(_options(name).items()))
    spec = dict(num_classes=K, arch="tiny", image_size=SIZE, batch_size=2, precision="fp32")
    tuned = trace_train(StepSpec(name, options=options, **spec))
    decoder = trace_train(StepSpec("decoder_ft", **spec))
    assert not tuned.frozen_encoder and tuned.flops(False) > decoder.flops(False) > 0


def test_scalar_draws_are_real_constants_and_larger_draws_stay_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode, is_fake

    from mopeft.measure.step_model import ScalarDraws

    with FakeTensorMode(), ScalarDraws(seed=3):
        one = torch.rand(1)
        assert bool(one > -1.0) and one.shape == (1,)  # readable: a constant
        first = float(one)
        assert torch.randn((1, 1)).shape == (1, 1)
        assert is_fake(torch.rand(4))
    with FakeTensorMode(), ScalarDraws(seed=3):
        assert float(torch.rand(1)) == first  # the plan stays deterministic


# ------------------------------------------------------------------------------------ figures
def test_figure_columns_of_peft_methods_carry_the_config_label(tmp_path):
    from mopeft.report.curves import Run, training_curves_figure
    from mopeft.report.figure_files import method_labels
    from mopeft.report.tables import METHOD_LABELS

    config = tmp_path / "config.yaml"
    declared = {"peft_dora": {"tuner": "LORA", "label": "DoRA"}, "peft_x": {"tuner": "IA3"}}
    config.write_text(
        yaml.safe_dump({"main": {"methods": ["lora", "peft_dora", "peft_x"]}, "peft_methods": declared})
    )
    cells = [SimpleNamespace(method=m) for m in ("lora", "peft_dora", "peft_x")]
    labels = method_labels(config, cells)
    assert labels == {"lora": METHOD_LABELS["lora"], "peft_dora": "DoRA", "peft_x": "peft_x"}
    assert method_labels(None, cells)["peft_dora"] == "peft_dora"  # no config: the name
    runs = [Run("floodnet", m, "default", 0, "main", (1.0, 0.5), Path("x")) for m in ("lora", "peft_dora")]
    fig = training_curves_figure(runs, labels=labels)
    assert [ax.get_title() for ax in fig.axes[:2]] == [METHOD_LABELS["lora"], "DoRA"]
