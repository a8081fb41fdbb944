"""Hydra composition for every `harness` subcommand, and what the configs say about themselves.

Each subcommand has a primary config `configs/<name>.yaml`; the words after the subcommand are Hydra overrides
(`key=value`, `group=option`, `+new=value`). Composition happens before any model is loaded, and a bad override
fails at once with one line that names the key, the value and what is valid: an unknown key or group option gets
the closest valid one suggested (difflib), and a value whose type differs from the key's default (`k=abc`,
`dry_run=maybe`) is refused. Ranges and existence are checked by each command before its first compute.

The YAML comments are the documentation of each key (`config_docs`): `harness <command> --help` prints them, so
there is no second copy to keep in step. A key's description is its inline comment, else the comment lines right
above it; the first comment block of a file describes the file (for a group option: the option). A key that the
chosen option does not document takes the description of the same key in another option of its group.
"""
from __future__ import annotations

import difflib
import functools
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from harness.core.io import CONFIG_DIR

_ABSENT = object()


class ConfigError(ValueError):
    """A config that cannot be used; the message names the problem."""


def _compose(config_name: str, overrides: Sequence[str], hydra_cfg: bool = False) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_cfg)
    finally:
        GlobalHydra.instance().clear()


def _key(override: str) -> str:
    """The key of an override: `+a.b@pkg=v` -> `a.b`."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def is_group(key: str) -> bool:
    return bool(key) and (CONFIG_DIR / key).is_dir()


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def suggest(word: str, choices: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest choice, or ''. Dotted keys are also matched by their last part
    (`tempreature` -> `generation.temperature`)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close and any("." in c for c in choices):
        by_last: dict[str, str] = {}
        for c in choices:
            by_last.setdefault(c.rsplit(".", 1)[-1], c)
        last = difflib.get_close_matches(word.rsplit(".", 1)[-1], list(by_last), n=1, cutoff=0.75)
        close = [by_last[last[0]]] if last else []
    return f" (did you mean {close[0]}?)" if close else ""


def key_paths(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key path of a config, inner nodes included (lists are leaves)."""
    out = []
    if isinstance(cfg, DictConfig):
        for k in cfg.keys():
            path = f"{prefix}{k}"
            out.append(path)
            node = cfg._get_node(k)
            if isinstance(node, DictConfig):
                out.extend(key_paths(node, path + "."))
    return out


@functools.lru_cache(maxsize=32)
def _defaults(config_name: str, group_overrides: tuple[str, ...]) -> DictConfig:
    """The config with only its group selections applied: the reference for keys and types."""
    return _compose(config_name, group_overrides)


def _diagnose(config_name: str, overrides: list[str], error: Exception) -> str:
    """One line naming the override Hydra refused, the value and what is valid."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for o in overrides:
        try:
            OverridesParser.create().parse_overrides([o])
        except OverrideParseException as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            return (f"cannot parse the override {o!r}: {first} (quote values that hold '=', spaces or brackets, "
                    "e.g. 'key=[\"a=1\"]')")
    for o in overrides:
        key, value = _key(o), o.split("=", 1)[1]
        if is_group(key) and not o.startswith("~"):
            options = group_options(key)
            if value not in options:
                return (f"{key}={value!r} is not an option of group {key}{suggest(value, options)}; "
                        f"options: {', '.join(options)}")
    groups = tuple(o for o in overrides if is_group(_key(o)))
    try:
        base = _defaults(config_name, groups)
    except Exception:
        base = None
    if base is not None:
        paths = key_paths(base)
        for o in overrides:
            key = _key(o)
            if is_group(key) or o.startswith("+"):
                continue
            if OmegaConf.select(base, key, default=_ABSENT, throw_on_resolution_failure=False) is _ABSENT:
                return f"unknown key {key!r}{suggest(key, paths)}; --help lists the keys"
    lines = [x.strip() for x in str(error).splitlines() if x.strip() and not x.startswith(("See https", "\t"))]
    return "; ".join(lines[:2]) or type(error).__name__


_KINDS = ((bool, "true or false"), (int, "an integer"), (float, "a number"))


def _type_ok(default: Any, value: Any) -> str | None:
    """None if `value` may replace `default`, else the kind of value expected."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    return None


def check_types(cfg: DictConfig, base: DictConfig, overrides: Sequence[str]) -> None:
    """Each `key=value` override keeps the type of the key's default (an int stays an int, a bool a bool)."""
    for o in overrides:
        key = _key(o)
        if o.startswith(("+", "~")) or is_group(key):
            continue
        default = OmegaConf.select(base, key, default=None, throw_on_resolution_failure=False)
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        want = _type_ok(default, value)
        if want is not None and value is not None:
            raise ConfigError(f"{key}={value!r} is not valid: expected {want} (default {format_value(default)})")
        if isinstance(value, float) and not math.isfinite(value) and isinstance(default, (int, float)):
            raise ConfigError(f"{key}={value!r} is not valid: expected a finite number "
                              f"(default {format_value(default)})")


def load_config(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `configs/<config_name>.yaml` with `overrides`; raise ConfigError with a one-line message."""
    overrides = list(overrides)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"arguments must be key=value overrides, got: {' '.join(bad)} (--help lists the keys)")
    try:
        cfg = _compose(config_name, overrides)
    except Exception as e:  # hydra raises several types; all mean "this config is wrong"
        raise ConfigError(_diagnose(config_name, overrides, e)) from e
    plain = [o for o in overrides if not o.startswith(("+", "~")) and not is_group(_key(o))]
    if plain:
        groups = tuple(o for o in overrides if is_group(_key(o)))
        check_types(cfg, _defaults(config_name, groups), plain)
    return cfg


def require_choice(value: str, valid: Sequence[str], name: str) -> str:
    """Check that `value` is one of `valid`; the error lists the valid ones."""
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid{suggest(str(value), [str(v) for v in valid])}; "
                          f"choose one of: {', '.join(map(str, valid))}")
    return value


def require_int(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool) within [low, high]; the error names the key, the value and the range."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        rng = (f">= {low}" if high is None else f"in [{low}, {high}]") if low is not None else f"<= {high}"
        raise ConfigError(f"{name}={value!r} is not valid: expected an integer {rng}")
    return value


def require_number(value: Any, name: str, low: float | None = None, high: float | None = None,
                   low_open: bool = False, high_open: bool = False) -> float:
    """A finite number within the given bounds (open or closed); the error names the key, the value and the range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        rng = f"in {lo}, {hi}" if lo and hi else (f"{'>' if low_open else '>='} {low}" if lo
                                                 else f"{'<' if high_open else '<='} {high}")
        raise ConfigError(f"{name}={value!r} is not valid: expected a number {rng}")
    return float(value)


def require_seed(value: Any, name: str = "seed") -> int:
    """Seeds reach numpy and torch, which take 0 <= seed < 2**32."""
    return require_int(value, name, 0, 2**32 - 1)


def require_output_dir(path: Any, name: str = "out") -> Path:
    """A folder that can be created or written: not an existing file, its nearest existing parent a writable
    folder. Checked before any compute, so a run does not fail after hours at its first write."""
    if path in (None, ""):
        raise ConfigError(f"{name} is required: the folder to write to ({name}=DIR)")
    p = Path(str(path)).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{name}={str(path)!r} is a file, not a folder; give a folder to write to")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{name}={str(path)!r}: {parent} is a file, so the folder cannot be created")
    try:  # a real write (os.access says yes to root on a read-only folder such as /sys); nothing is left behind
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".harness-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{name}={str(path)!r}: cannot write in {parent} ({e.strerror or e}); "
                          "give a writable folder") from e
    return p


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def require_model_path(value: Any, name: str, run_dir_ok: bool = False) -> str:
    """A model folder (config.json), with `run_dir_ok` a training run folder (final/config.json), or a hub id
    that can be loaded: with HF_HUB_OFFLINE set, one in the local cache (the hub is not asked)."""
    text = str(value)
    p = Path(text).expanduser()
    if p.exists():
        if p.is_dir() and ((p / "config.json").is_file() or (run_dir_ok and (p / "final" / "config.json").is_file())):
            return text
        raise ConfigError(f"{name}={text!r} is not a model folder (no config.json)"
                          + (" nor a training run (no final/config.json)" if run_dir_ok else ""))
    if text.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(text):
        raise ConfigError(f"{name}={text!r} does not exist: give a model folder"
                          + (", a training run folder" if run_dir_ok else "")
                          + " or a hub id such as Qwen/Qwen3-8B-Base")
    from huggingface_hub import repo_exists, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(text, "config.json"), str):
        return text
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ConfigError(f"{name}={text!r} is neither a local folder nor a hub id in the local cache "
                          "(HF_HUB_OFFLINE=1: the hub is not asked)")
    try:
        found = repo_exists(text)
    except Exception as e:  # no network, a proxy refusing, ...
        raise ConfigError(f"{name}={text!r} is not a local folder, not in the local hub cache, and the hub could "
                          f"not be asked ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not found:
        raise ConfigError(f"{name}={text!r} is neither a local folder nor a model on the hub")
    return text


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# What the configs say about themselves: the YAML comments, for --help

_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)")
_KEY = re.compile(r"^(\s*)([A-Za-z_][\w.-]*)\s*:(.*)$")


def _inline_comment(rest: str) -> str:
    """The comment after a value on the same line (a '#' outside quotes, after a space)."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[i + 1:].strip()
    return ""


@functools.lru_cache(maxsize=None)
def parse_yaml_docs(path: Path) -> tuple[str, str, dict[str, str], tuple]:
    """(package, file description, {dotted key: description}, defaults list) of one config file."""
    package, header, docs, defaults = "", "", {}, []
    pending: list[str] = []
    stack: list[tuple[int, str]] = []
    seen_key, in_defaults = False, False
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if m := _PACKAGE.match(s):
            package = m.group(1)
            continue
        if not s:
            if not seen_key and pending and not header:
                header = " ".join(pending)
            pending = []
            continue
        if s.startswith("#"):
            pending.append(s.lstrip("#").strip())
            continue
        if in_defaults and s.startswith("- "):
            item = s[2:].split("#", 1)[0].strip()
            defaults.append(tuple(x.strip() for x in item.split(":", 1)) if ":" in item else (item,))
            continue
        m = _KEY.match(line)
        if not m:
            pending = []
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        if not seen_key and pending and not header:
            header, pending = " ".join(pending), []
        seen_key = True
        while stack and stack[-1][0] >= indent:
            stack.pop()
        full = ".".join([k for _, k in stack] + [key])
        in_defaults = full == "defaults"
        doc = _inline_comment(rest) or " ".join(pending)
        if doc and not in_defaults:
            docs[full] = doc
        pending = []
        stack.append((indent, key))
    return package, header, docs, tuple(defaults)


def _config_files(config_name: str, choices: dict[str, str]) -> list[tuple[Path, str]]:
    """The files a composition reads, in merge order, each with the package its keys land in."""
    out: list[tuple[Path, str]] = []

    def visit(rel: str, group: str | None) -> None:
        path = CONFIG_DIR / f"{rel}.yaml"
        if not path.is_file():
            return
        package, _, _, defaults = parse_yaml_docs(path)
        pkg = package or (group or "")
        pkg = "" if pkg == "_global_" else pkg
        self_seen = False
        for entry in defaults:
            if entry == ("_self_",):
                out.append((path, pkg))
                self_seen = True
            elif len(entry) == 1:  # a sibling in the same group
                visit(f"{group}/{entry[0]}" if group else entry[0], group)
            else:
                g, option = entry[0].lstrip("/"), choices.get(entry[0].lstrip("/"), entry[1])
                if option not in ("null", "None"):
                    visit(f"{g}/{option}", g)
        if not self_seen:
            out.append((path, pkg))

    visit(config_name, None)
    return out


def config_docs(config_name: str, choices: dict[str, str]) -> tuple[str, dict[str, str], dict[str, str]]:
    """(description of the command's config, {key: description}, {group: description of the chosen option})."""
    docs: dict[str, str] = {}
    for group in choices:  # first: the same key documented in any option of the group (each key documented once)
        for option in reversed(group_options(group)):
            package, _, option_docs, _ = parse_yaml_docs(CONFIG_DIR / group / f"{option}.yaml")
            pkg = "" if (package or group) == "_global_" else (package or group)
            docs.update({f"{pkg}.{k}" if pkg else k: d for k, d in option_docs.items()})
    for path, pkg in _config_files(config_name, choices):  # then the files this composition reads, in order
        for key, doc in parse_yaml_docs(path)[2].items():
            docs[f"{pkg}.{key}" if pkg else key] = doc
    groups = {g: parse_yaml_docs(CONFIG_DIR / g / f"{o}.yaml")[1] for g, o in choices.items()
              if (CONFIG_DIR / g / f"{o}.yaml").is_file()}
    return parse_yaml_docs(CONFIG_DIR / f"{config_name}.yaml")[1], docs, groups


def describe(config_name: str, overrides: Sequence[str] = ()) -> dict:
    """Everything --help prints: the config's description, its groups (choice, options, description) and every
    key (value as composed with `overrides`, description)."""
    cfg = load_config(config_name, overrides)
    groups = tuple(o for o in overrides if is_group(_key(o)))
    hcfg = _compose(config_name, groups, hydra_cfg=True)
    choices = {k: str(v) for k, v in OmegaConf.to_container(hcfg.hydra.runtime.choices).items()
               if not k.startswith("hydra/") and v is not None}
    about, docs, group_docs = config_docs(config_name, choices)
    keys = []
    for path in key_paths(cfg):
        node = OmegaConf.select(cfg, path, throw_on_resolution_failure=False)
        block = isinstance(node, DictConfig) and len(node) > 0
        if block and path not in docs:
            continue  # a block without a comment: its keys are listed one by one
        doc = docs.get(path, "")
        if not doc:  # a key inside a documented block (e.g. report's `models`, a grid's `resources`)
            parents = [".".join(path.split(".")[:i]) for i in range(path.count("."), 0, -1)]
            doc = next((f"(see {p})" for p in parents if docs.get(p)), "")
        keys.append({"key": path, "value": node, "doc": doc, "block": block})
    return {"about": about, "groups": [(g, o, group_options(g), group_docs.get(g, "")) for g, o in choices.items()],
            "keys": keys}


def format_value(v: Any, width: int = 40) -> str:
    if isinstance(v, (DictConfig, ListConfig)):
        v = OmegaConf.to_container(v, resolve=False)
    text = "null" if v is None else ("true" if v is True else "false" if v is False else str(v))
    if isinstance(v, (list, dict)):
        import json
        text = json.dumps(v, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[:width - 3] + "..."
