"""`harness <command> [key=value ...]`: one console script, thin dispatch to library functions.

Each command composes `configs/<config>.yaml` with the overrides and calls `module:function(cfg)`,
which returns an exit status. Config errors are reported before any model is loaded.
"""
from __future__ import annotations

import importlib
import sys

# command -> (primary config name or None, "module:function")
COMMANDS: dict[str, tuple[str | None, str]] = {
    "train": ("train", "trainers.train:main"),
    "eval": ("eval", "harness.evaluation:main"),
    "run": ("run", "harness.runner:main"),
    "status": ("run", "harness.runner:status_main"),
    "report": ("report", "harness.report:main"),
    "tasks": ("eval", "harness.evaluation:tasks_main"),
    "tiny": ("tiny", "trainers.tiny:main"),
}
# `harness analyze <name>` -> configs/analyze/<name>.yaml and ablations.<name>:main
ANALYSES = ("entropy", "overlap", "shift", "temperature")

USAGE = f"""usage: harness <command> [key=value ...]

commands:
  train     train one run (DAPO with an entropy token mask)
  eval      evaluate a checkpoint on benchmark tasks (lm-eval)
  run       run every unfinished cell of a grid (default: grid=mini)
  status    table of a grid's cells
  report    tables, figures and REPORT.md from stored results
  tasks     list evaluation tasks
  analyze   the paper's entropy analyses: {', '.join(ANALYSES)}
  tiny      build a tiny random Qwen3 model and tokenizer offline

Arguments are Hydra overrides, e.g.  harness train model=tiny variant=top20 trainer.max_steps=3 out=DIR
"""


def main(argv: list[str] | None = None) -> int:
    from harness.core.config import ConfigError, load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, args = argv[0], argv[1:]
    if cmd == "analyze":
        if not args or args[0] not in ANALYSES:
            print(f"harness analyze: choose one of: {', '.join(ANALYSES)}", file=sys.stderr)
            return 2
        config_name, target, args = f"analyze/{args[0]}", f"ablations.{args[0]}:main", args[1:]
    elif cmd in COMMANDS:
        config_name, target = COMMANDS[cmd]
    else:
        print(f"harness: unknown command {cmd!r}; choose one of: {', '.join([*COMMANDS, 'analyze'])}",
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(config_name, args) if config_name else None
        module, func = target.split(":")
        fn = getattr(importlib.import_module(module), func)
        rc = fn(cfg)
    except ConfigError as e:
        print(f"harness {cmd}: config error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
