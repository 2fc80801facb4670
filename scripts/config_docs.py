#!/usr/bin/env python3
"""Write config/README.md's key tables from the config schema (what `make config-docs` runs).

Usage: scripts/config_docs.py [--check]

Why generated: the keys' documentation used to be a hand-kept table beside the schema, and it
drifted (new keys went undocumented). Now workflow/schemas/config.schema.yaml is the one source: each
property's ``description`` and ``default`` become a row, and only the part of config/README.md
between ``<!-- config-docs -->`` and ``<!-- /config-docs -->`` is rewritten, so the hand-written
intro above it stays. tests/test_config_docs.py fails when the file and the schema disagree.

The "study" column is config/config.yaml's value: Snakemake merges that file first, so it is what a
run gets for a key that the user's own config file leaves out.

``--check`` writes nothing and exits 1 when the file is out of date. Standard library + PyYAML only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
STUDY = ROOT / "config/config.yaml"
README = ROOT / "config/README.md"
BEGIN = "<!-- config-docs -->"
END = "<!-- /config-docs -->"
LIST_SHOWN = 8  # a longer study list is shown by its first items and its length
TEXT_SHOWN = 40  # a longer study string (a sha256) is shortened


@dataclass(frozen=True)
class Row:
    """One documented key: where it is, what it takes, what it is when absent, what it means."""

    path: str  # `training.loss.ce`, `ablations.studies[].name`, `custom_datasets.<dataset>.classes`
    type: str
    default: str  # the schema's default, else "required" or "optional"
    study: str  # config/config.yaml's value ("" where the key is inside a list or a mapping's entry)
    description: str

    @property
    def section(self) -> str:
        """The top-level key the row belongs to (one table per top-level key)."""
        return self.path.split(".", 1)[0].split("[", 1)[0]


def resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    """The subschema a local ``$ref`` (``#/$defs/name``) points to; ``node`` itself without one."""
    ref = node.get("$ref")
    if ref is None:
        return node
    if not ref.startswith("#/"):
        raise ValueError(f"only local $refs are documented, got {ref!r}")
    target: Any = schema
    for part in ref[2:].split("/"):
        target = target[part]
    return resolve(schema, target)


def _def_name(node: Mapping[str, Any]) -> str | None:
    ref = node.get("$ref", "")
    return ref.rsplit("/", 1)[1] if ref.startswith("#/$defs/") else None


def _is_named_scalar(schema: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """A ``$ref`` to a scalar def (``key``): shown by its name, spelt out once in the legend."""
    return _def_name(node) is not None and resolve(schema, node).get("type") in (
        "string",
        "integer",
        "number",
    )


def _value(value: Any) -> str:
    """A YAML scalar as the config file would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and not value:
        return "{}"
    return str(value)


def _bounds(node: Mapping[str, Any]) -> str:
    parts = []
    for keyword, word in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if keyword in node:
            parts.append(f"{word} {_value(node[keyword])}")
    if "multipleOf" in node:
        parts.append(f"multiple of {_value(node['multipleOf'])}")
    return " " + ", ".join(parts) if parts else ""


def type_of(schema: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    """What a key takes, in words, from its subschema (types, enums, bounds, list items)."""
    if _is_named_scalar(schema, node):
        return f"*{_def_name(node)}*"
    node = resolve(schema, node)
    if "enum" in node:
        text = " / ".join(f"`{_value(v)}`" for v in node["enum"])
    elif "oneOf" in node and "type" not in node:
        text = " or ".join(type_of(schema, branch) for branch in node["oneOf"])
    else:
        types = node.get("type", [])
        words = []
        for kind in [types] if isinstance(types, str) else types:
            if kind == "array":
                size = node.get("minItems")
                exact = f" ({size} items)" if size is not None and size == node.get("maxItems") else ""
                words.append(f"list of {type_of(schema, node.get('items', {}))}{exact}")
            elif kind == "object":
                words.append("mapping")
            elif kind in ("integer", "number"):
                words.append(kind + _bounds(node))
            elif kind == "string" and "pattern" in node:
                words.append(f"string matching `{node['pattern']}`")
            else:
                words.append(kind)
        text = " or ".join(words)
    excluded = node.get("not", {}).get("enum")
    if excluded:
        text += ", not " + " / ".join(f"`{_value(v)}`" for v in excluded)
    return text


def description_of(schema: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    """The key's own description, then its ``$ref`` target's (shared text is written once)."""
    texts = [node.get("description", "")]
    if "$ref" in node:
        texts.append(resolve(schema, node).get("description", ""))
    texts = [" ".join(t.split()).rstrip(".") for t in texts if t and t.strip()]
    return " ".join(t[0].upper() + t[1:] + "." for t in texts)


def _study_value(value: Any) -> str:
    """config/config.yaml's value in a cell: scalars and short lists whole, long ones abridged."""
    if isinstance(value, dict):
        return "`{}`" if not value else ""
    if isinstance(value, list):
        if any(isinstance(v, dict | list) for v in value):
            return f"{len(value)} entries"
        if len(value) > LIST_SHOWN:
            return f"`[{', '.join(map(_value, value[:3]))}, …]` ({len(value)})"
        return f"`[{', '.join(map(_value, value))}]`"
    text = _value(value)
    return f"`{text[:12]}…`" if len(text) > TEXT_SHOWN else f"`{text}`"


_MISSING = object()


def _children(
    schema: Mapping[str, Any], node: Mapping[str, Any]
) -> Iterator[tuple[str, Mapping[str, Any], bool, bool]]:
    """(path suffix, subschema, required, a config value can be looked up) of what ``node`` holds:
    its properties, its patternProperties' entries (a ``<title>`` placeholder), an object branch
    of a ``oneOf``, and the properties of a list's object items (``[]``)."""
    node = resolve(schema, node)
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        yield f".{name}", sub, name in required, True
    for sub in node.get("patternProperties", {}).values():
        yield f".<{sub.get('title', 'key')}>", sub, False, False
    for branch in node.get("oneOf", []) if "type" not in node else []:
        # an object branch defines keys (model.weights); branches without a type only constrain
        # keys defined above (training's epochs/steps), and are no rows of their own
        if branch.get("type") == "object":
            yield from _children(schema, branch)
    items = node.get("items")
    if node.get("type") == "array" and isinstance(items, Mapping):
        for suffix, sub, req, _ in _children(schema, items):
            yield f"[]{suffix}", sub, req, False


def rows(schema: Mapping[str, Any], study: Mapping[str, Any]) -> list[Row]:
    """Every key of the schema, depth first in the schema's order, with its study value."""
    out: list[Row] = []

    def visit(path: str, node: Mapping[str, Any], required: bool, value: Any) -> None:
        default = f"`{_value(node['default'])}`" if "default" in node else None
        study_cell = "" if value is _MISSING else _study_value(value)
        out.append(
            Row(
                path=path,
                type=type_of(schema, node),
                default=default or ("required" if required else "optional"),
                study=study_cell,
                description=description_of(schema, node),
            )
        )
        for suffix, sub, req, lookup in _children(schema, node):
            name = suffix.lstrip(".")
            found = value.get(name, _MISSING) if lookup and isinstance(value, Mapping) else _MISSING
            visit(path + suffix, sub, req, found)

    top_required = set(schema.get("required", []))
    for name, sub in schema["properties"].items():
        visit(name, sub, name in top_required, study.get(name, _MISSING))
    return out


def _cell(text: str) -> str:
    """Markdown table cell text: `|` escaped, `<` escaped outside code spans (an HTML tag else)."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def render(schema: Mapping[str, Any], study: Mapping[str, Any]) -> str:
    """The generated block, markers included: a legend, then one table per top-level key."""
    named = sorted(
        {_def_name(n) for n in _walk(schema) if isinstance(n, Mapping) and _is_named_scalar(schema, n)}
    )
    lines = [
        BEGIN,
        "<!-- Generated from workflow/schemas/config.schema.yaml by `make config-docs` "
        "(scripts/config_docs.py); edit the schema, not this part. -->",
        "",
        "Columns: **default** is what the pipeline does when the key is absent (*required*: the merged "
        "config must have it; *optional*: see the description); **study** is `config/config.yaml`'s "
        "value, which a run gets for any key its own config files leave out. "
        "`[]` marks a list's entries, `<...>` a key you choose."
        + "".join(f" *{name}*: {type_of(schema, schema['$defs'][name])}." for name in named),
    ]
    section = None
    for row in rows(schema, study):
        if row.section != section:
            section = row.section
            lines += ["", f"### `{section}`", "", "| key | type | default | study | description |"]
            lines.append("|---|---|---|---|---|")
        cells = [f"`{row.path}`", row.type, row.default, row.study, row.description]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join([*lines, "", END])


def _walk(node: Any) -> Iterator[Any]:
    yield node
    children = node.values() if isinstance(node, Mapping) else node if isinstance(node, list) else ()
    for child in children:
        yield from _walk(child)


def replace_block(text: str, block: str) -> str:
    """``text`` with its BEGIN ... END part (markers included) replaced by ``block``; exactly one
    pair of markers, in that order, or nothing is written (the hand-written part is never lost)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected exactly one {BEGIN} ... {END} block")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + block + text[end:]


def generated(schema_path: Path = SCHEMA, study_path: Path = STUDY, readme: Path = README) -> str:
    """config/README.md as it should be: its hand-written parts, the tables of the current schema."""
    schema = yaml.safe_load(schema_path.read_text())
    study = yaml.safe_load(study_path.read_text())
    return replace_block(readme.read_text(), render(schema, study))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if config/README.md is out of date")
    args = parser.parse_args(argv)
    text = generated()
    shown = README.relative_to(ROOT)
    if README.read_text() == text:
        print(f"{shown} is up to date")
        return 0
    if args.check:
        print(f"{shown} is out of date: run `make config-docs`", file=sys.stderr)
        return 1
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from mopeft.io import write_text  # atomic: an interrupted run leaves the old file

    write_text(README, text)
    print(f"updated {shown} from {SCHEMA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
