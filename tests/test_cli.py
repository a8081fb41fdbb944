"""The `harness` command line: dispatch, --help (every key with its default and a description, derived from the
YAML comments), --cfg job (the composed config, as Hydra apps print it), and the closest valid key or option
suggested for a misspelt one (issue 15, "Asking the command")."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from harness.cli import ANALYSES, COMMANDS, main
from harness.core.config import format_value, key_paths, load_config, parse_yaml_docs
from harness.core.io import CONFIG_DIR


def test_unknown_command_is_rejected(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "eval", "run", "status", "report", "tasks", "analyze"):
        assert cmd in out


# Each command with its default groups, and train / run / report with other presets, whose keys differ.
HELP_CASES = [(cmd, []) for cmd in COMMANDS] + [("analyze", [name]) for name in ANALYSES] + [
    ("train", ["model=mini", "trainer=dapo_mini", "data=mini", "variant=top20"]),
    ("train", ["model=qwen3_8b", "trainer=dapo_paper", "data=dapo_math"]),
    ("train", ["data=local"]),
    ("run", ["grid=paper", "launcher=slurm"]),
    ("report", ["grid=rho"]),
]


@pytest.mark.parametrize("cmd,args", HELP_CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_help_prints_every_key_with_default_and_description(cmd, args, capsys):
    assert main([cmd, *args, "--help"]) == 0
    out = capsys.readouterr().out
    config = f"analyze/{args[0]}" if cmd == "analyze" else COMMANDS[cmd][0]
    overrides = args[1:] if cmd == "analyze" else args
    cfg = load_config(config, overrides)
    lines = out.splitlines()
    for path in key_paths(cfg):
        node = OmegaConf.select(cfg, path)
        if isinstance(node, DictConfig) and len(node):
            continue  # blocks: their keys are listed one by one
        shown = f"  {path}={format_value(node)}"
        line = next((x for x in lines if x.startswith(shown + " ")), None)
        assert line is not None, f"{shown.strip()!r} missing from `harness {cmd} --help`"
        assert line[len(shown):].strip(), f"{path}: no description (add a YAML comment to the config that sets it)"
    # group options are listed with the chosen one
    if cmd == "train":
        assert any(x.startswith("  model=") and "qwen3_8b" in x and "tiny" in x for x in lines)


def test_help_shows_the_overridden_value(capsys):
    assert main(["eval", "k=4", "--help"]) == 0
    assert "  k=4 " in capsys.readouterr().out


def test_descriptions_come_from_the_yaml_comments():
    _, header, docs, defaults = parse_yaml_docs(CONFIG_DIR / "eval.yaml")
    assert docs["k"] == "Samples per problem (the paper: 16)."
    assert docs["bootstrap.iters"] == "Bootstrap resamples of the problems for the confidence intervals."
    assert header.startswith("`harness eval` / `harness tasks`")
    package, _, docs, _ = parse_yaml_docs(CONFIG_DIR / "variant" / "top20.yaml")
    assert package == "mask" and "name" not in docs  # documented once, in variant/full.yaml
    assert parse_yaml_docs(CONFIG_DIR / "train.yaml")[3][0] == ("model", "tiny")


def test_help_through_the_console_script():
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--help"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "reference=full" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("resolve", [False, True])
def test_cfg_job_prints_the_composed_config(resolve, capsys):
    args = ["train", "model=mini", "data=mini", "trainer.max_steps=7", "--cfg", "job"] + (["--resolve"] if resolve
                                                                                           else [])
    assert main(args) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    cfg = load_config("train", ["model=mini", "data=mini", "trainer.max_steps=7"])
    assert printed == OmegaConf.to_container(cfg, resolve=resolve)
    assert printed["trainer"]["max_steps"] == 7
    # data.model_path is `${model.path}` in the YAML: shown as written unless --resolve
    assert printed["data"]["model_path"] == ("results/cache/mini/base" if resolve else "${model.path}")


def test_cfg_job_does_not_run_the_command(tmp_path, capsys):
    assert main(["tiny", f"out={tmp_path / 'm'}", "--cfg", "job"]) == 0
    assert not (tmp_path / "m").exists()
    assert yaml.safe_load(capsys.readouterr().out)["out"] == str(tmp_path / "m")


@pytest.mark.parametrize("argv,expected", [
    (["train", "trainer.max_step=3"], "unknown key 'trainer.max_step' (did you mean trainer.max_steps?)"),
    (["train", "max_steps=3"], "(did you mean trainer.max_steps?)"),
    (["eval", "tempreature=0.5"], "(did you mean generation.temperature?)"),
    (["report", "refrence=top20"], "(did you mean reference?)"),
    (["train", "model=qwen3-8b"], "model='qwen3-8b' is not an option of group model (did you mean qwen3_8b?); "
                                  "options: mini, qwen3_14b, qwen3_32b, qwen3_8b, tiny"),
    (["train", "variant=top30"], "(did you mean top50?); options: bottom80, full, random20, top10, top20, top50"),
    (["run", "launcher=slrum"], "(did you mean slurm?)"),
    (["trian"], "unknown command 'trian' (did you mean train?)"),
    (["analyze", "entrpy"], "(did you mean entropy?)"),
    (["analyze", "overlap", "n_problem=3"], "(did you mean n_problems?)"),
    (["train", "--cfg", "hydra"], "only `--cfg job`"),
    (["eval", "--verbose"], "unknown option '--verbose'"),
])
def test_misspelt_key_or_option_gets_the_closest_suggested(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
