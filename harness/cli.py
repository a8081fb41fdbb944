"""`harness <command> [key=value ...]`: one console script, thin dispatch to library functions.

Each command composes `configs/<config>.yaml` with the overrides and calls `module:function(cfg)`, which returns
an exit status. Bad input (an unknown key or option, a value of the wrong type or out of range, an output folder
that cannot be written, a file that is not there) is reported in one line before any compute, exit status 2.

    harness <command> --help        the command's groups and keys: default, one line each (from the YAML comments)
    harness <command> ... --cfg job  the composed config as YAML, as Hydra apps print it (--resolve: interpolated)
"""
from __future__ import annotations

import importlib
import sys

# command -> (primary config name or None, "module:function", one line)
COMMANDS: dict[str, tuple[str | None, str, str]] = {
    "train": ("train", "trainers.train:main", "train one run (DAPO with an entropy token mask)"),
    "eval": ("eval", "harness.evaluation:main", "evaluate a checkpoint on benchmark tasks (lm-eval)"),
    "run": ("run", "harness.runner:main", "run every unfinished cell of a grid (default: grid=mini)"),
    "status": ("run", "harness.runner:status_main", "table of a grid's cells"),
    "cancel": ("run", "harness.runner:cancel_main", "cancel a grid's SLURM jobs (launcher=slurm)"),
    "report": ("report", "harness.report:main", "tables, figures and REPORT.md from stored results"),
    "tasks": ("eval", "harness.evaluation:tasks_main", "list evaluation tasks"),
    "tiny": ("tiny", "trainers.tiny:main", "build a tiny random Qwen3 model and tokenizer offline"),
}
from ablations import ANALYSES  # `harness analyze <name>` -> configs/analyze/<name>.yaml and ablations.<name>:main

USAGE = f"""usage: harness <command> [key=value ...] [--help] [--cfg job [--resolve]]

commands:
{chr(10).join(f"  {c:<9} {d}" for c, (_, _, d) in COMMANDS.items())}
  analyze   the paper's entropy analyses: {', '.join(ANALYSES)}

Arguments are Hydra overrides, e.g.  harness train model=tiny variant=top20 trainer.max_steps=3 out=DIR
`harness <command> --help` lists a command's keys with their defaults.
"""


def _flags(args: list[str]) -> tuple[dict, list[str]]:
    """Split --help / --cfg job / --resolve from the overrides; raise ConfigError on anything else."""
    from harness.core.config import ConfigError

    flags: dict = {"help": False, "cfg": None, "resolve": False}
    rest, i = [], 0
    while i < len(args):
        a = args[i]
        if a in ("-h", "--help"):
            flags["help"] = True
        elif a in ("-c", "--cfg") or a.startswith("--cfg="):
            value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else None)
            i += 0 if "=" in a else 1
            if value != "job":
                raise ConfigError(f"--cfg {value or ''}: only `--cfg job` (the composed config) is supported")
            flags["cfg"] = value
        elif a == "--resolve":
            flags["resolve"] = True
        elif a.startswith("-"):
            raise ConfigError(f"unknown option {a!r}; options: --help, --cfg job, --resolve "
                              "(settings are key=value overrides)")
        else:
            rest.append(a)
        i += 1
    return flags, rest


def help_text(command: str, config_name: str, overrides: list[str]) -> str:
    """The command's groups and keys, each with its value and the one-line description from the YAML comment."""
    from harness.core.config import describe, format_value

    d = describe(config_name, overrides)
    line = COMMANDS[command][2] if command in COMMANDS else f"analysis {config_name.split('/')[-1]}"
    name = f"analyze {config_name.split('/')[-1]}" if command == "analyze" else command
    out = [f"usage: harness {name} [key=value ...] [--cfg job [--resolve]]", "", f"{line}.",
           *([d["about"]] if d["about"] else []), ""]
    if d["groups"]:
        out.append("groups (group=option; the option's keys are listed below under the group's name):")
        for g, chosen, options, about in d["groups"]:
            out.append(f"  {g + '=' + chosen:<20} {' | '.join(options)}" + (f"\n      {about}" if about else ""))
        out.append("")
    out.append("keys (key=value; the value shown is the default with the overrides given):")
    rows = [(f"{k['key']}:" if k["block"] else f"{k['key']}={format_value(k['value'])}", k["doc"])
            for k in d["keys"]]
    width = min(44, max((len(left) for left, _ in rows), default=0))
    out += [f"  {left:<{width}}  {doc}".rstrip() for left, doc in rows]
    return "\n".join(out)


def _target(cmd: str, args: list[str]) -> tuple[str | None, str, list[str]]:
    from harness.core.config import ConfigError, suggest

    if cmd == "analyze":
        if not args or args[0] in ("-h", "--help"):
            raise ConfigError(f"analyze: choose one of: {', '.join(ANALYSES)} "
                              "(then `harness analyze NAME --help` lists its keys)")
        if args[0] not in ANALYSES:
            raise ConfigError(f"analyze {args[0]!r} is unknown{suggest(args[0], ANALYSES)}; "
                              f"choose one of: {', '.join(ANALYSES)}")
        return f"analyze/{args[0]}", f"ablations.{args[0]}:main", args[1:]
    if cmd not in COMMANDS:
        raise ConfigError(f"unknown command {cmd!r}{suggest(cmd, [*COMMANDS, 'analyze'])}; "
                          f"choose one of: {', '.join([*COMMANDS, 'analyze'])}")
    return COMMANDS[cmd][0], COMMANDS[cmd][1], args


def main(argv: list[str] | None = None) -> int:
    from harness.core.io import quiet_progress_unless_terminal

    quiet_progress_unless_terminal()  # before transformers / lm-eval import tqdm
    from harness.core.config import ConfigError, load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd = argv[0]
    try:
        if cmd == "analyze" and len(argv) > 1 and argv[1] in ("-h", "--help"):
            print(f"usage: harness analyze NAME [key=value ...]\n\nNAME: {', '.join(ANALYSES)} "
                  "(docs/analyses.md); `harness analyze NAME --help` lists its keys.")
            return 0
        config_name, target, args = _target(cmd, argv[1:])
        flags, overrides = _flags(args)
        if flags["help"]:
            print(help_text(cmd, config_name, overrides))
            return 0
        cfg = load_config(config_name, overrides) if config_name else None
        if flags["cfg"]:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(cfg, resolve=flags["resolve"]), end="")
            return 0
        module, func = target.split(":")
        fn = getattr(importlib.import_module(module), func)
        rc = fn(cfg)
    except ConfigError as e:
        msg = " ".join(str(e).split())  # one line
        print(f"harness {cmd}: config error: {msg}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
