"""The docs are true: every `harness` command in README.md and docs/ composes (and runs, where that is offline and
writes nothing), and every repository path and relative link they name exists.

Placeholders the docs use on purpose: `...` (the rest of a command), upper-case words (`DIR`, `PATH`, `NAME`) and
`<cell>` (under `results/runs/mini/` replaced here by a real cell of the committed mini grid, so paths under it
are checked for real; elsewhere a placeholder).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").rglob("*.md")])
PATH_ROOTS = ("configs/", "results/", "harness/", "trainers/", "ablations/", "docs/", "benchmarks/", "tests/",
              "../shared/")
# outputs a command creates: not expected to exist beforehand
OUTPUT_KEYS = {"out", "out_dir", "results_dir", "replay_file"}
# commands that are cheap, offline and write nothing: run for real (the others are composed and validated)
RUN_FOR_REAL = {"tasks", "status"}
# documented paths that do not exist in a clean clone, each for a stated reason
NOT_SHIPPED = {
    "harness/tasks/math/gsm8k_boxed.yaml": "the file a reader creates in docs/evaluation.md's add-a-benchmark walk-through",
    "results/cache/": "built on first use by `harness run` / `harness train` (ignored by git)",
}


def _mini_cell() -> str:
    cells = sorted(p.name for p in (REPO / "results" / "runs" / "mini").glob("mini-top20-s0-*"))
    return cells[0] if cells else "mini-top20-s0"


def _fenced_lines(text: str) -> list[str]:
    """Lines of ```bash / ``` blocks, with backslash continuations joined and comments dropped."""
    out, block, buf = [], False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            block = not block
            continue
        if not block:
            continue
        buf += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            out.append(buf.split(" #")[0].strip())
            buf = ""
    return out


def _commands() -> list[tuple[str, str]]:
    cmds = []
    for doc in DOCS:
        for line in _fenced_lines(doc.read_text(encoding="utf-8")):
            m = re.match(r"^(?:\.venv/bin/)?harness\s+(.*)$", line)
            if m:
                cmds.append((str(doc.relative_to(REPO)), m.group(1).replace("runs/mini/<cell>", f"runs/mini/{_mini_cell()}")))
    return cmds


def _paths() -> list[tuple[str, str]]:
    """Repository paths named in backticks or as relative links."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):  # [text](relative/link)
            target = m.group(1)
            if not re.match(r"^[a-z]+:", target):
                out.append((str(doc.relative_to(REPO)), str((doc.parent / target).resolve().relative_to(REPO.parent))))
        for m in re.finditer(r"`([^`\s]+)`", text):
            p = m.group(1).replace("runs/mini/<cell>", f"runs/mini/{_mini_cell()}").rstrip(".,:").split("::")[0]
            if p.startswith(PATH_ROOTS) and not p.startswith(tuple(NOT_SHIPPED)) and not re.search(r"[<>*{}|$\[\]]|/N\b|-N\b|NAME|\.\.\.", p):
                out.append((str(doc.relative_to(REPO)), str((REPO / p).resolve().relative_to(REPO.parent))))
    return sorted(set(out))


def _placeholder(value: str) -> bool:
    return bool(re.search(r"\b[A-Z][A-Z_]{1,}\b|\.\.\.|<[a-z_]+>", value))


@pytest.mark.parametrize("doc,args", _commands(), ids=lambda x: x if len(x) < 60 else x[:60])
def test_documented_command_composes(doc, args, capsys):
    from harness.cli import COMMANDS, main
    from harness.core.config import load_config

    words = shlex.split(args)
    cmd, rest = words[0], words[1:]
    if cmd == "analyze":
        config_name, rest = f"analyze/{rest[0]}", rest[1:]
    else:
        assert cmd in COMMANDS, f"{doc}: unknown command `harness {cmd}`"
        config_name = COMMANDS[cmd][0]
    if "..." in rest:
        return  # a sketch of a command: only its name is checked
    overrides = [w for w in rest if not _placeholder(w.split("=", 1)[-1])]
    load_config(config_name, overrides)  # raises on an unknown key, group option or bad syntax
    for w in overrides:
        key, _, value = w.partition("=")
        if key.lstrip("+") in OUTPUT_KEYS or not value.startswith(PATH_ROOTS):
            continue
        if value.startswith("../shared/") and not (REPO.parent / "shared").exists():
            continue
        assert (REPO / value).exists(), f"{doc}: `harness {args}` names {value}, which does not exist"
    if cmd in RUN_FOR_REAL or (cmd == "run" and "dry_run=true" in overrides):
        assert main([cmd, *overrides]) == 0, f"{doc}: `harness {args}` failed"


@pytest.mark.parametrize("doc,path", _paths())
def test_documented_path_exists(doc, path):
    if path.startswith("shared/") and not (REPO.parent / "shared").exists():
        pytest.skip("../shared is not beside this clone")
    assert (REPO.parent / path).exists(), f"{doc} names {path}, which does not exist"


def test_the_docs_name_commands_and_paths():
    """The extraction finds what it should (so the tests above cannot pass by finding nothing)."""
    cmds = {a.split()[0] for _, a in _commands()}
    assert {"run", "train", "eval", "report", "analyze", "status", "tasks"} <= cmds
    assert len(_paths()) > 30
