"""What a result's id covers: the keys of a resolved config that change the result (data: harness/identity.yaml).

A grid cell's id hashes its training identity (the keys that change the trained weights), an evaluation's id
(`eval/<id>/`) its evaluation identity, an analysis's id (`analysis/<name>-<id>/`) its analysis identity.
Performance, logging, checkpoint-frequency, path and label keys enter none of them, so changing one reruns
nothing. A key added after results were made names (under `absent_as`) the value that reproduces the behaviour
from before it existed; it enters an id only when its value differs, so earlier results keep their ids. The
table in docs/runner.md is `markdown_table()` of the same file; tests/test_identity.py fails on a key of any
composed config that the file does not classify.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import yaml

KEYS_FILE = Path(__file__).with_name("identity.yaml")
SECTIONS = ("train", "eval", "analyze")  # analyze: every configs/analyze/*.yaml


@functools.cache
def classification() -> dict[str, dict[str, tuple[bool, str]]]:
    """section -> dotted key -> (in the identity, why)."""
    raw = yaml.safe_load(KEYS_FILE.read_text())
    out = {}
    for section in SECTIONS:
        keys: dict[str, tuple[bool, str]] = {}
        for kind, listed in (("identity", True), ("ignored", False)):
            for key, why in (raw[section].get(kind) or {}).items():
                if key in keys:
                    raise ValueError(f"{KEYS_FILE.name}: {section}.{key} listed twice")
                keys[key] = (listed, str(why))
        out[section] = keys
    return out


@functools.cache
def absent_as() -> dict[str, dict[str, Any]]:
    """section -> identity key -> the value that reproduces the behaviour from before the key existed."""
    raw = yaml.safe_load(KEYS_FILE.read_text())
    out = {}
    for section in SECTIONS:
        values = raw[section].get("absent_as") or {}
        bad = [k for k in values if not classification()[section].get(k, (False,))[0]]
        if bad:
            raise ValueError(f"{KEYS_FILE.name}: {section}.absent_as lists keys that are not identity keys: {bad}")
        out[section] = dict(values)
    return out


def rule(section: str, key: str) -> str | None:
    """The listed key (longest dotted prefix of `key`) that decides it; None when nothing covers it."""
    keys = classification()[section]
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in keys:
            return prefix
    return None


def leaves(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [2]} -> {"a.b": 1, "c": [2]} (lists and scalars are leaves)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(leaves(v, key + "."))
        else:
            out[key] = v
    return out


def identity(section: str, resolved: Mapping) -> dict[str, Any]:
    """The leaves of a resolved config that change its result. A key nobody classified (e.g. a `+new=` override)
    counts as changing it: an id may then change without need, never stay the same when a result changed."""
    keys, before = classification()[section], absent_as()[section]
    out = {}
    for key, value in leaves(resolved).items():
        r = rule(section, key)
        if key in before and value == before[key]:
            continue  # the behaviour from before the key existed: ids made then stay valid
        if r is None or keys[r][0]:
            out[key] = value
    return out


def digest(obj: Any) -> str:
    """8 hex digits of sha256 over the canonical JSON of `obj`."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def markdown_table() -> str:
    """docs/runner.md's table: one row per listed key."""
    rows = ["| config | key | in the id | why |", "| --- | --- | --- | --- |"]
    for section, keys in classification().items():
        config = {"train": "train (cell id)", "eval": "eval (evaluation id)",
                  "analyze": "analyze/* (analysis id)"}[section]
        for key, (listed, why) in sorted(keys.items(), key=lambda kv: (not kv[1][0], kv[0])):
            inid = "yes" if listed else "no"
            if key in absent_as()[section]:
                v = absent_as()[section][key]
                inid = f"yes, unless `{'null' if v is None else str(v).lower() if isinstance(v, bool) else v}`"
            rows.append(f"| {config} | `{key}` | {inid} | {why.replace('|', '/')} |")
    return "\n".join(rows)


def write_docs(path: Path) -> None:
    """Rewrite the table between the identity-table markers of docs/runner.md."""
    text = path.read_text()
    start = text.index("\n", text.index("<!-- identity table")) + 1
    end = text.index("<!-- end identity table -->")
    path.write_text(text[:start] + markdown_table() + "\n" + text[end:])


if __name__ == "__main__":
    write_docs(Path(__file__).resolve().parents[1] / "docs" / "runner.md")
