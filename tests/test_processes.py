"""Several processes: `accelerate launch` with 2 CPU processes (gloo) trains the tiny model, plain data parallel and
under DeepSpeed ZeRO-3 (the shipped configs/accelerate/zero3.yaml, DeepSpeed's CPU accelerator), and what the ranks
decide together is what one process holding both ranks' data decides.

accelerate 1.x has no multi-process CPU launcher of its own on one machine: `--cpu --num_processes 2` (or a config
with `distributed_type: MULTI_CPU`) takes its single-process path and starts ONE process (measured: summary.json
said `processes: 1`), unless mpirun is configured. `--multi_gpu` is its torchrun launcher; on a machine without a
GPU the trainer asks for the CPU (`use_cpu`), and accelerate then sets up MULTI_CPU with gloo (docs/training.md).
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.core.io import CONFIG_DIR, read_jsonl
from trainers.masks import select_tokens

TESTS = Path(__file__).parent
G = 4  # responses per prompt (dapo_cpu)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_process(a: dict, b: dict, mode: str, rho: float):
    """The pool of both ranks as one process holds it: rank 0's rows, then rank 1's (padded to one width)."""
    width = max(a["entropy"].size(1), b["entropy"].size(1), 1)

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, width - t.size(1)), value=value) if t.numel() else t.new_zeros(0, width)

    ent = torch.cat([pad(a["entropy"], 0.0), pad(b["entropy"], 0.0)])
    valid = torch.cat([pad(a["valid"], False), pad(b["valid"], False)])
    got = torch.cat([pad(a["mask"], False), pad(b["mask"], False)])
    return got, select_tokens(ent, valid, mode, rho, "topk", "local").mask, valid


def _groups(rewards: list[float]) -> list[bool]:
    """Kept groups by hand: the rewards of a group of G are not all equal."""
    return [len(set(rewards[i:i + G])) > 1 for i in range(0, len(rewards), G)]


LAUNCHERS = {
    # accelerate's torchrun launcher; the trainer asks for the CPU, accelerate sets up gloo
    "ddp": ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
    # the cells' own accelerate file with its DeepSpeed file named on the command line, as a SLURM job's training
    # does (harness/runner.py `_accelerate_train`)
    # DeepSpeed's CPU accelerator over gloo; on first use it builds its shared-memory op with g++ (minutes)
    "zero3": ["--config_file", str(CONFIG_DIR / "accelerate" / "zero3.yaml"),
              "--deepspeed_config_file", str(CONFIG_DIR / "deepspeed" / "zero3.json")],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_accelerate_two_cpu_processes(tmp_path, math_data_dir, launcher):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECORD_DIR": str(tmp_path / "record")}
    env.pop("DS_ACCELERATOR", None)  # the trainer names DeepSpeed's CPU accelerator itself (trainers/train.py)
    if launcher == "zero3" and importlib.util.find_spec("deepspeed") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("deepspeed is not installed (CI installs the `test` extra, which has it)")
        pytest.skip("deepspeed is not installed (pip install -e '.[test]')")
    out, rec = tmp_path / "run", tmp_path / "record"
    rec.mkdir()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCHERS[launcher], "--num_processes", "2",
           "--main_process_port", str(_free_port()), str(TESTS / "launched_train.py"),
           "variant=top20", "trainer.max_steps=2", f"out={out}", "trainer.mask_scope=gathered",
           "data=local", f"data.path={math_data_dir / 'math500.jsonl'}", "data.limit=16",
           "data.reward=launched_train:rank_staggered_reward", "trainer.overlong_buffer=0",
           "trainer.micro_batching=token_budget", "trainer.micro_batch_tokens=400",
           "trainer.micro_batch_size=2"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (torch.load(rec / f"rank{r}.pt") for r in (0, 1))
    assert r0["setup"] == r1["setup"] == {"distributed_type": "DistributedType." + (
        "DEEPSPEED" if launcher == "zero3" else "MULTI_CPU"), "backend": "gloo",
        "zero_stage": 3 if launcher == "zero3" else None}

    # (a) mask_scope=gathered: every pool's selection over both ranks = one process over both ranks' rows
    assert len(r0["select"]) == len(r1["select"]) >= 4  # 2 steps x at least 2 token-budget pools
    differs_from_local = 0
    for a, b in zip(r0["select"], r1["select"]):
        assert (a["step"], a["pool"]) == (b["step"], b["pool"])
        got, want, valid = _one_process(a, b, "top", 0.2)
        assert torch.equal(got, want), (a["step"], a["pool"])
        n = int(valid.sum())
        assert int(got.sum()) == (-(-n // 5) if n else 0)  # ceil(0.2 n) over both ranks
        local = [select_tokens(x["entropy"], x["valid"], "top", 0.2).mask for x in (a, b)]
        differs_from_local += any(not torch.equal(x["mask"], m) for x, m in zip((a, b), local))
    assert differs_from_local > 0  # the pools' selections depend on the other rank: the check above has teeth

    # (b) dynamic sampling: both ranks generate the same rounds; they stop at the first round after which every
    # rank holds 2 kept groups (rank 0 was full after round 1 and still generated round 2 for rank 1)
    assert len(r0["rounds"]) == len(r1["rounds"]) == 2
    kept = {r: [_groups(x["rewards"]) for x in rec_["rounds"]] for r, rec_ in ((0, r0), (1, r1))}
    assert kept == {0: [[True, True], [True, True]], 1: [[True, False], [True, True]]}
    for rec_, keeps in ((r0, kept[0]), (r1, kept[1])):  # the batch trained on: the first 2 kept groups, in order
        groups = [toks for x, k in zip(rec_["rounds"], keeps) for g, keep in enumerate(k) if keep
                  for toks in [x["tokens"][g * G:(g + 1) * G]]]
        (batch,) = rec_["batches"]
        assert batch["tokens"] == [t for g in groups[:2] for t in g] and not any(batch["fill"])

    # (c) the main process alone writes: one metrics line per step, the statistics over both ranks
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["gen_batches"] == 2 and r["dropped_group_frac"] == pytest.approx(1 / 8) for r in rows)
    selected = [sum(int(x["mask"].sum()) for x in r0["select"] + r1["select"] if x["step"] == s) for s in (0, 1)]
    assert [r["n_selected_tokens"] for r in rows] == selected
    assert json.loads((out / "summary.json").read_text())["processes"] == 2
    assert (out / "final" / "model.safetensors").exists()
