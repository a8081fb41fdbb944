"""Bad input, as a careless user would type it (issue 12, "Bad input fails before compute, by name"): every case is
refused through the real `harness` entry point with exit status 2, one line on stderr naming the key, the value and
what is valid, no traceback, and no output folder written.

One table, run in process through `harness.cli.main` (what the console script calls); a few also as a subprocess
through the installed `harness` script, which is what users run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.io import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "report"
LCB = REPO_ROOT / "tests" / "fixtures" / "livecodebench.jsonl"

# argv with placeholders -> substrings the one-line message must hold.
#   @OUT@: a folder that must not exist afterwards; @FILE@: an existing file; @EMPTY@: an empty .jsonl;
#   @EMPTYDIR@: a data_dir whose task file is empty; @RO@: a folder nobody may write in; @TINY@: a tiny model;
#   @SAMPLES@: an evaluation folder with samples; @MISSING@: a path that does not exist.
CASES = [
    # ------------------------------------------------------------- train
    ("train no out", ["train"], ["out is required"]),
    ("train out is a file", ["train", "out=@FILE@"], ["out='@FILE@' is a file, not a folder"]),
    ("train out read-only", ["train", "out=@RO@/run"], ["out='@RO@/run': cannot write in @RO@"]),
    ("train seed=-1", ["train", "seed=-1", "out=@OUT@"], ["seed=-1 is not valid", "[0, 4294967295]"]),
    ("train seed=abc", ["train", "seed=abc", "out=@OUT@"], ["seed='abc' is not valid: expected an integer"]),
    ("train missing data file", ["train", "data=local", "data.path=@MISSING@", "out=@OUT@"],
     ["data.path='@MISSING@' does not exist", "JSONL or parquet"]),
    ("train no data file", ["train", "data=local", "out=@OUT@"], ["data.path is required"]),
    ("train empty data file", ["train", "data=local", "data.path=@EMPTY@", "out=@OUT@"],
     ["data.path='@EMPTY@' is empty"]),
    ("train unknown model", ["train", "model=qwen3-8b", "out=@OUT@"],
     ["model='qwen3-8b' is not an option of group model (did you mean qwen3_8b?)", "options: mini"]),
    ("train misspelt key", ["train", "trainer.max_step=3", "out=@OUT@"],
     ["unknown key 'trainer.max_step' (did you mean trainer.max_steps?)"]),
    ("train max_steps=0", ["train", "trainer.max_steps=0", "out=@OUT@"], ["trainer.max_steps=0", "positive integer"]),
    ("train max_steps=abc", ["train", "trainer.max_steps=abc", "out=@OUT@"],
     ["trainer.max_steps='abc' is not valid: expected an integer (default 3)"]),
    ("train lr=-1", ["train", "trainer.learning_rate=-1", "out=@OUT@"], ["trainer.learning_rate=-1", "positive"]),
    ("train lr=nan", ["train", "trainer.learning_rate=nan", "out=@OUT@"], ["trainer.learning_rate=nan", "finite"]),
    ("train missing model path", ["train", "model.path=@MISSING@", "out=@OUT@"],
     ["model.path=@MISSING@ does not exist"]),
    ("train resume=maybe", ["train", "resume=maybe", "out=@OUT@"],
     ["resume='maybe' is not valid: expected true or false"]),
    ("train dtype", ["train", "model.dtype=fp8", "out=@OUT@"], ["model.dtype='fp8' is not valid", "float32"]),
    ("train report_to typo", ["train", "trainer.report_to=tensorbaord", "out=@OUT@"],
     ["trainer.report_to='tensorbaord' is not valid (did you mean tensorboard?)"]),
    ("train 32B without a path", ["train", "model=qwen3_32b", "out=@OUT@"], ["never published", "model.path="]),
    ("train not key=value", ["train", "foo", "out=@OUT@"], ["key=value", "foo"]),
    # ------------------------------------------------------------- eval
    ("eval no out", ["eval", "checkpoint=@TINY@", "tasks=mini"], ["out is required"]),
    ("eval missing checkpoint", ["eval", "checkpoint=@MISSING@", "tasks=mini", "out=@OUT@"],
     ["checkpoint='@MISSING@' does not exist", "hub id"]),
    ("eval unknown hub id offline", ["eval", "checkpoint=no-such/model", "tasks=mini", "out=@OUT@"],
     ["checkpoint='no-such/model' is neither a local folder nor a hub id in the local cache"]),
    ("eval checkpoint not a model", ["eval", "checkpoint=@SAMPLES@", "tasks=mini", "out=@OUT@"],
     ["is not a model folder (no config.json)"]),
    ("eval k=abc", ["eval", "checkpoint=@TINY@", "tasks=mini", "k=abc", "out=@OUT@"],
     ["k='abc' is not valid: expected an integer (default 16)"]),
    ("eval k=0", ["eval", "checkpoint=@TINY@", "tasks=mini", "k=0", "out=@OUT@"], ["k=0 is not valid", ">= 1"]),
    ("eval unknown task", ["eval", "checkpoint=@TINY@", "tasks=mni", "out=@OUT@"],
     ["unknown task or group 'mni'", "groups: math, mini"]),
    ("eval out is a file", ["eval", "checkpoint=@TINY@", "tasks=mini", "out=@FILE@"], ["out='@FILE@' is a file"]),
    ("eval out read-only", ["eval", "checkpoint=@TINY@", "tasks=mini", "out=@RO@/ev"], ["cannot write in @RO@"]),
    ("eval bootstrap.iters=0", ["eval", "checkpoint=@TINY@", "tasks=mini", "bootstrap.iters=0", "out=@OUT@"],
     ["bootstrap.iters=0 is not valid", ">= 10"]),
    ("eval confidence=0", ["eval", "checkpoint=@TINY@", "tasks=mini", "bootstrap.confidence=0", "out=@OUT@"],
     ["bootstrap.confidence=0 is not valid", "(0, 1)"]),
    ("eval confidence=1.5", ["eval", "checkpoint=@TINY@", "tasks=mini", "bootstrap.confidence=1.5", "out=@OUT@"],
     ["bootstrap.confidence=1.5 is not valid"]),
    ("eval seed=-1", ["eval", "checkpoint=@TINY@", "tasks=mini", "seed=-1", "out=@OUT@"], ["seed=-1 is not valid"]),
    ("eval empty data file", ["eval", "checkpoint=@TINY@", "tasks=mini_id", "data_dir=@EMPTYDIR@", "out=@OUT@"],
     ["mini_id.jsonl is empty", "task 'mini_id'"]),
    ("eval missing data_dir", ["eval", "checkpoint=@TINY@", "tasks=mini", "data_dir=@MISSING@", "out=@OUT@"],
     ["data_dir='@MISSING@' is not a folder"]),
    ("eval replay code without opt-in", ["eval", "backend=replay", "tasks=livecodebench", f"replay_file={LCB}",
                                         "out=@OUT@"],
     ["tasks livecodebench run model-written code", "allow_code_execution=true"]),
    ("eval replay without file", ["eval", "backend=replay", "tasks=mini_id", "out=@OUT@"],
     ["backend=replay needs replay_file="]),
    ("eval replay missing file", ["eval", "backend=replay", "tasks=mini_id", "replay_file=@MISSING@", "out=@OUT@"],
     ["replay_file='@MISSING@' does not exist"]),
    ("eval backend", ["eval", "checkpoint=@TINY@", "backend=hugging", "tasks=mini", "out=@OUT@"],
     ["backend='hugging' is not valid", "hf, vllm, replay"]),
    ("eval temperature<0", ["eval", "checkpoint=@TINY@", "tasks=mini", "generation.temperature=-1", "out=@OUT@"],
     ["generation.temperature=-1 is not valid", ">= 0"]),
    ("eval greedy with k>1", ["eval", "checkpoint=@TINY@", "tasks=mini", "generation.temperature=0", "out=@OUT@"],
     ["generation.temperature=0 is greedy", "k=1"]),
    ("eval limit=0", ["eval", "checkpoint=@TINY@", "tasks=mini", "limit=0", "out=@OUT@"], ["limit=0 is not valid"]),
    ("eval pass_ks=[0]", ["eval", "checkpoint=@TINY@", "tasks=mini", "pass_ks=[0]", "out=@OUT@"],
     ["pass_ks=0 is not valid", ">= 1"]),
    ("eval pass_ks scalar", ["eval", "checkpoint=@TINY@", "tasks=mini", "pass_ks=4", "out=@OUT@"],
     ["pass_ks=4 is not valid: expected a list"]),
    ("eval hf.batch_size=0", ["eval", "checkpoint=@TINY@", "tasks=mini", "hf.batch_size=0", "out=@OUT@"],
     ["hf.batch_size=0 is not valid"]),
    ("eval timeout=0", ["eval", "checkpoint=@TINY@", "tasks=mini", "scoring.timeout_s=0", "out=@OUT@"],
     ["scoring.timeout_s=0 is not valid"]),
    ("eval allow_code_execution=maybe", ["eval", "checkpoint=@TINY@", "tasks=mini", "allow_code_execution=maybe",
                                         "out=@OUT@"], ["allow_code_execution='maybe'", "true or false"]),
    ("eval misspelt key", ["eval", "tempreature=0.5", "out=@OUT@"],
     ["unknown key 'tempreature' (did you mean generation.temperature?)"]),
    # ------------------------------------------------------------- run and status (grids: dry_run writes nothing)
    ("run jobs=0", ["run", "jobs=0", "results_dir=@OUT@"], ["jobs=0 is not valid", ">= 1"]),
    ("run jobs=-3", ["run", "jobs=-3", "results_dir=@OUT@"], ["jobs=-3 is not valid"]),
    ("run dry_run=maybe", ["run", "dry_run=maybe", "results_dir=@OUT@"],
     ["dry_run='maybe' is not valid: expected true or false (default false)"]),
    ("run unknown grid", ["run", "grid=mni", "results_dir=@OUT@"], ["grid='mni'", "(did you mean mini?)"]),
    ("run unknown launcher", ["run", "launcher=slrum", "results_dir=@OUT@"], ["(did you mean slurm?)"]),
    ("run results_dir is a file", ["run", "results_dir=@FILE@"], ["results_dir='@FILE@' is a file"]),
    ("run unknown eval task in grid", ["run", "grid.eval.tasks=[mini,nosuch]", "dry_run=true", "results_dir=@OUT@"],
     ["grid mini, cell", "unknown task or group 'nosuch'"]),
    ("run unknown eval task in grid (real run)", ["run", "grid.eval.tasks=[mini,nosuch]", "results_dir=@OUT@"],
     ["unknown task or group 'nosuch'"]),
    ("run bad eval value in grid", ["run", 'grid.eval.overrides=["k=16","bootstrap.iters=0"]', "dry_run=true",
                                    "results_dir=@OUT@"], ["grid mini, cell", "bootstrap.iters=0 is not valid"]),
    ("run eval value of the wrong type in grid", ["run", 'grid.eval.overrides=["k=abc"]', "dry_run=true",
                                                  "results_dir=@OUT@"], ["k='abc' is not valid"]),
    ("run unknown analysis key in grid", ["run", 'grid.analyses.1.overrides=["n_problem=5"]', "dry_run=true",
                                          "results_dir=@OUT@"], ["unknown key 'n_problem' (did you mean n_problems?)"]),
    ("run bad analysis value in grid", ["run", 'grid.analyses.1.overrides=["samples={eval_dir}/x.jsonl","k=0"]',
                                        "dry_run=true", "results_dir=@OUT@"], ["grid mini, cell", "k=0 is not valid"]),
    ("run bad analysis placeholder", ["run", 'grid.analyses.1.overrides=["samples={evaldir}"]', "dry_run=true",
                                      "results_dir=@OUT@"], ["unknown placeholder", "{eval_dir}"]),
    ("run bad train value in grid", ["run", 'grid.train_overrides=["trainer.learning_rate=-1"]', "dry_run=true",
                                     "results_dir=@OUT@"], ["grid mini, cell", "trainer.learning_rate=-1"]),
    ("run negative seed in grid", ["run", "grid.seeds=[-1]", "dry_run=true", "results_dir=@OUT@"],
     ["grid.seeds=-1 is not valid"]),
    ("run unknown variant in grid", ["run", "grid.variants=[top30]", "dry_run=true", "results_dir=@OUT@"],
     ["variant='top30' is not an option", "top50"]),
    ("run only matches nothing", ["run", "only=nomatch*", "dry_run=true", "results_dir=@OUT@"],
     ["only='nomatch*' matches none of the cells"]),
    ("run unparsable override", ["run", "grid.eval.overrides=[k=abc]", "dry_run=true", "results_dir=@OUT@"],
     ["cannot parse the override 'grid.eval.overrides=[k=abc]'", "quote"]),
    ("status on a missing results_dir", ["status", "results_dir=@OUT@"], ["results_dir='@OUT@' does not exist"]),
    # ------------------------------------------------------------- report (the committed fixture grid `fix`)
    ("report k matches nothing", ["report", f"results_dir={FIXTURE}", "grid.name=fix", "k=99", "out_dir=@OUT@"],
     ["k=99: no avg@k result at k=99", "available k: 4"]),
    ("report step matches nothing", ["report", f"results_dir={FIXTURE}", "grid.name=fix", "step=999",
                                     "out_dir=@OUT@"], ["step=999 was not evaluated", "evaluated steps: 2, 4"]),
    ("report reference matches nothing", ["report", f"results_dir={FIXTURE}", "grid.name=fix", "reference=ful",
                                          "out_dir=@OUT@"],
     ["reference='ful' matches no variant", "did you mean full"]),
    ("report step=abc", ["report", f"results_dir={FIXTURE}", "grid.name=fix", "step=abc", "out_dir=@OUT@"],
     ["step='abc' is not valid"]),
    ("report k=abc", ["report", f"results_dir={FIXTURE}", "grid.name=fix", "k=abc", "out_dir=@OUT@"],
     ["k='abc' is not valid"]),
    ("report unknown grid folder", ["report", f"results_dir={FIXTURE}", "grid.name=fixx", "out_dir=@OUT@"],
     ["no results for grid 'fixx'", "(did you mean fix?)"]),
    ("report n_boot=0", ["report", f"results_dir={FIXTURE}", "grid.name=fix", "n_boot=0", "out_dir=@OUT@"],
     ["n_boot=0 is not valid"]),
    ("report alpha=0", ["report", f"results_dir={FIXTURE}", "grid.name=fix", "alpha=0", "out_dir=@OUT@"],
     ["alpha=0 is not valid", "(0, 0.5)"]),
    ("report out_dir is a file", ["report", f"results_dir={FIXTURE}", "grid.name=fix", "out_dir=@FILE@"],
     ["out_dir='@FILE@' is a file"]),
    ("report missing results_dir", ["report", "results_dir=@MISSING@", "out_dir=@OUT@"],
     ["results_dir='@MISSING@'", "does not exist"]),
    ("report metric family", ["report", f"results_dir={FIXTURE}", "grid.name=fix", "metrics.Acc=acc@k",
                              "out_dir=@OUT@"], ["acc@k", "avg@k, pass@k, maj@k, len@k"]),
    # ------------------------------------------------------------- analyze
    ("analyze unknown", ["analyze", "entrpy"], ["'entrpy' is unknown (did you mean entropy?)"]),
    ("analyze no input", ["analyze", "entropy", "model_path=@TINY@", "out=@OUT@"], ["give samples="]),
    ("analyze missing samples", ["analyze", "entropy", "model_path=@TINY@", "samples=@MISSING@", "out=@OUT@"],
     ["samples='@MISSING@': no samples_*.jsonl file found"]),
    ("analyze k=0", ["analyze", "entropy", "model_path=@TINY@", "samples=@SAMPLES@", "k=0", "out=@OUT@"],
     ["k=0 is not valid"]),
    ("analyze missing model", ["analyze", "entropy", "model_path=@MISSING@", "samples=@SAMPLES@", "out=@OUT@"],
     ["model_path='@MISSING@' does not exist"]),
    ("analyze missing run", ["analyze", "overlap", "run=@MISSING@", "samples=@SAMPLES@", "out=@OUT@"],
     ["run='@MISSING@': not a directory"]),
    ("analyze out is a file", ["analyze", "entropy", "model_path=@TINY@", "samples=@SAMPLES@", "out=@FILE@"],
     ["out='@FILE@' is a file"]),
    ("analyze seed=-1", ["analyze", "entropy", "model_path=@TINY@", "samples=@SAMPLES@", "seed=-1", "out=@OUT@"],
     ["seed=-1 is not valid"]),
    ("analyze device", ["analyze", "entropy", "model_path=@TINY@", "samples=@SAMPLES@", "device=gpu", "out=@OUT@"],
     ["device='gpu' is not valid", "cuda:N"]),
    ("analyze misspelt key", ["analyze", "overlap", "n_problem=3", "out=@OUT@"],
     ["unknown key 'n_problem' (did you mean n_problems?)"]),
    ("analyze temperature unknown task", ["analyze", "temperature", "model_path=@TINY@", "tasks=[nosuch]", "out=@OUT@"],
     ["unknown task or group 'nosuch'"]),
    ("analyze temperature not a number", ["analyze", "temperature", "model_path=@TINY@", "t_high=[abc]", "out=@OUT@"],
     ["t_high=['abc']", "numbers >= 0"]),
    # ------------------------------------------------------------- tiny and the command line itself
    ("tiny no out", ["tiny"], ["out=DIR is required"]),
    ("tiny out is a file", ["tiny", "out=@FILE@"], ["out='@FILE@' is a file"]),
    ("tiny size 0", ["tiny", "hidden_size=0", "out=@OUT@"], ["hidden_size must be a positive integer, got 0"]),
    ("tiny heads", ["tiny", "num_heads=3", "num_kv_heads=2", "out=@OUT@"],
     ["num_heads=3 must be a multiple of num_kv_heads=2"]),
    ("unknown command", ["trian"], ["unknown command 'trian' (did you mean train?)"]),
    ("unknown option", ["eval", "--verbose"], ["unknown option '--verbose'"]),
]

SUBPROCESS = {"eval k=abc", "train seed=-1", "run jobs=0", "status on a missing results_dir",
              "report reference matches nothing", "eval out read-only"}


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    from trainers.tiny import build_tiny

    root = tmp_path_factory.mktemp("bad")
    (root / "file.txt").write_text("not a folder\n")
    (root / "empty.jsonl").write_text("")
    (root / "emptydata").mkdir()
    (root / "emptydata" / "mini_id.jsonl").write_text("\n")
    if os.geteuid() == 0:
        ro = Path("/sys")  # root writes anywhere chmod allows; sysfs refuses new files even to root
    else:
        ro = root / "readonly"
        ro.mkdir()
        ro.chmod(0o555)
    tiny = build_tiny(root / "tiny")
    (samples,) = sorted((REPO_ROOT / "results" / "runs" / "mini").glob("mini-base-*/eval/*/base"))
    return {"FILE": str(root / "file.txt"), "EMPTYDIR": str(root / "emptydata"), "EMPTY": str(root / "empty.jsonl"),
            "RO": str(ro), "TINY": str(tiny), "SAMPLES": str(samples), "MISSING": str(root / "no" / "such")}


def _fill(argv: list[str], places: dict[str, str], out: Path) -> list[str]:
    filled = []
    for a in argv:
        a = a.replace("@OUT@", str(out))
        for k in ("EMPTYDIR", "EMPTY", "FILE", "RO", "TINY", "SAMPLES", "MISSING"):
            a = a.replace(f"@{k}@", places[k])
        filled.append(a)
    return filled


@pytest.mark.parametrize("name,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_by_name(name, argv, expected, places, tmp_path, capsys):
    out = tmp_path / "out"
    args = _fill(argv, places, out)
    want = [_fill([e], places, out)[0] for e in expected]
    before = Path(places["FILE"]).read_text()
    if name in SUBPROCESS:
        script = Path(sys.executable).with_name("harness")
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "harness.cli"]
        r = subprocess.run(cmd + args, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
        rc, err = r.returncode, r.stderr
    else:
        rc, err = main(args), capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip() and "Warning" not in x and not x.startswith("  warnings.")]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    for w in want:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    assert not out.exists(), f"{out} was written"
    assert Path(places["FILE"]).read_text() == before
    if places["RO"] != "/sys":
        assert not any(Path(places["RO"]).iterdir())


def test_every_case_is_distinct():
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)) and len({json.dumps(c[1]) for c in CASES}) == len(CASES)
    assert SUBPROCESS <= set(names)
