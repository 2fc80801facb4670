"""One source for the config's documentation: the schema describes every key, config/README.md's
tables are generated from it (scripts/config_docs.py, `make config-docs`), and every key the shipped
configs use is documented there."""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "workflow/schemas/config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
STUDY = yaml.safe_load((ROOT / "config/config.yaml").read_text())
SHIPPED = ("config/config.yaml", "config/demo.yaml", "config/own-data-cpu.yaml")


def _load_generator() -> ModuleType:
    """scripts/config_docs.py as a module (scripts/ is not a package); registered in sys.modules
    before it runs, as its dataclass needs."""
    spec = importlib.util.spec_from_file_location("config_docs", ROOT / "scripts/config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


docs = _load_generator()


def _ref(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """A local $ref's target (the test's own resolver: it must not trust the generator's)."""
    target: Any = SCHEMA
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return target


def _defined_properties(node: Any, where: str = "schema") -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(where, name, subschema) of every property and patternProperties entry an object schema
    defines, at every level ($defs included). A ``properties`` without ``type: object`` only
    constrains keys defined elsewhere (training's oneOf over epochs/steps) and is skipped."""
    if isinstance(node, Mapping):
        if node.get("type") == "object":
            for name, sub in node.get("properties", {}).items():
                yield where, name, sub
            for sub in node.get("patternProperties", {}).values():
                yield where, f"<{sub.get('title', 'key')}>", sub
        for key, child in node.items():
            yield from _defined_properties(child, f"{where}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _defined_properties(child, f"{where}[{i}]")


def test_every_schema_property_has_a_description():
    """A key without a description would be an empty cell of the generated tables; a $ref to a
    described def (custom_datasets' entries) counts."""
    missing = []
    for where, name, sub in _defined_properties(SCHEMA):
        text = sub.get("description") or ("$ref" in sub and _ref(sub).get("description"))
        if not (isinstance(text, str) and text.strip()):
            missing.append(f"{where}: {name}")
    assert not missing, "schema properties without a description:\n" + "\n".join(missing)


def test_every_property_is_a_row_with_a_description():
    """The generator walks nested objects, lists of objects, patternProperties and $refs: each
    property the schema defines is a row (by its last path part), and no row is blank."""
    rows = docs.rows(SCHEMA, STUDY)
    last_parts = {re.split(r"\.|\[\]\.", r.path)[-1] for r in rows}
    defined = {name for _, name, _ in _defined_properties(SCHEMA)}
    assert defined <= last_parts, f"not in the tables: {sorted(defined - last_parts)}"
    assert all(r.description.strip() and r.type.strip() for r in rows)
    paths = {r.path for r in rows}
    for path in (
        "training.speed.encoder_cache",
        "training.loss.resolution",
        "efficiency.params_arch",
        "ablations.studies[].values",
        "custom_datasets.<dataset>.train.masks",
        "custom_datasets.<dataset>.palette.<class>",
        "model.weights.sha256",
        "gpu_constraints.<GB>",
    ):
        assert path in paths, path


def test_readme_tables_are_the_schemas():
    """config/README.md's generated part is exactly what the current schema renders to."""
    readme = (ROOT / "config/README.md").read_text()
    assert readme == docs.generated(), (
        "config/README.md is out of date with the schema: run `make config-docs`"
    )


def test_a_schema_edit_changes_the_tables_and_keeps_the_intro():
    """Drift is caught: a changed description changes the rendered block, and rewriting the block
    leaves the hand-written text around the markers as it was."""
    edited = copy.deepcopy(SCHEMA)
    edited["properties"]["training"]["properties"]["lr"]["description"] = "a changed description"
    block = docs.render(edited, STUDY)
    assert block != docs.render(SCHEMA, STUDY)
    assert "| A changed description. |" in block
    readme = (ROOT / "config/README.md").read_text()
    rewritten = docs.replace_block(readme, block)
    before, after = readme.split(docs.BEGIN)[0], readme.split(docs.END)[1]
    assert rewritten.startswith(before) and rewritten.endswith(after)
    with pytest.raises(ValueError, match="exactly one"):
        docs.replace_block(readme.replace(docs.END, ""), block)


def _documented_paths(value: Any, node: Mapping[str, Any], path: str = "") -> Iterator[str]:
    """The table path of every key of a config value, read along the schema (`[]` for a list's
    entries, `<title>` for a patternProperties key); a key the schema lacks yields its raw path."""
    if "$ref" in node:
        node = _ref(node)
    branches = [b for b in node.get("oneOf", []) if b.get("type") == "object"] if "type" not in node else []
    if isinstance(value, list) and isinstance(node.get("items"), Mapping):
        for item in value:
            yield from _documented_paths(item, node["items"], f"{path}[]")
    if not isinstance(value, Mapping):
        return
    for key, child in value.items():
        sub = node.get("properties", {}).get(key)
        sub = sub or next((b["properties"][key] for b in branches if key in b.get("properties", {})), None)
        if sub is not None:
            child_path = f"{path}.{key}" if path else key
        else:
            pattern = next((p for p in node.get("patternProperties", {}) if re.search(p, str(key))), None)
            if pattern is None:
                yield f"{path}.{key}" if path else key
                continue
            sub = node["patternProperties"][pattern]
            child_path = f"{path}.<{sub.get('title', 'key')}>"
        yield child_path
        yield from _documented_paths(child, sub, child_path)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_key_of_the_shipped_configs_is_documented(name):
    """Each key config/config.yaml, config/demo.yaml and config/own-data-cpu.yaml set is a row of
    the tables (e.g. the demo's custom_datasets.shapes.source.seed as
    `custom_datasets.<dataset>.source.seed`)."""
    config = yaml.safe_load((ROOT / name).read_text())
    documented = {r.path for r in docs.rows(SCHEMA, STUDY)}
    used = set(_documented_paths(config, SCHEMA))
    assert used, name
    assert not used - documented, f"{name}: keys not documented: {sorted(used - documented)}"


def _defaults(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, default) of every property default reachable through plain properties."""
    if isinstance(node, Mapping):
        for name, sub in node.get("properties", {}).items():
            if "default" in sub:
                yield (*path, name), sub["default"]
            yield from _defaults(sub, (*path, name))


def test_schema_defaults_are_set_by_the_study_config():
    """Snakemake's `validate` writes schema defaults into the config, where they would reach
    results/<run>/config.yaml and the resource plan's digest (which `mopeft plan`, validating
    without defaults, computes without them). A default is therefore only given for a key the
    study config sets, where writing it never happens; the others say theirs in words."""
    defaults = dict(_defaults(SCHEMA))
    assert defaults, "the schema gives no default at all"
    for path in defaults:
        value: Any = STUDY
        for part in path:
            assert isinstance(value, Mapping) and part in value, (
                f"config/config.yaml does not set {'.'.join(path)}"
            )
            value = value[part]


def test_schema_defaults_are_what_the_pipeline_does_without_the_key():
    """The training defaults are the resource plan's (and `mopeft train`'s) when a config leaves
    the keys out: the documented default is the behaviour, not a wish."""
    from mopeft.plan.model import RunSettings

    defaults = dict(_defaults(SCHEMA))
    bare = copy.deepcopy(STUDY)
    del bare["training"]["speed"]
    del bare["training"]["loss"]["resolution"]
    settings = RunSettings.from_config(bare)
    assert settings.loss_resolution == defaults[("training", "loss", "resolution")]
    assert settings.attention == defaults[("training", "speed", "attention")]
    assert settings.encoder_cache == defaults[("training", "speed", "encoder_cache")]
    assert defaults[("training", "speed", "compile")] is None  # eager: no --compile flag
    assert defaults[("training", "speed", "workers")] is None  # the plan's, else 4 / 0 (tiny)
