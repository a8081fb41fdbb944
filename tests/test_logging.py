"""Logging and progress with the real components: TensorBoard event files and an offline W&B run hold the DAPO
metrics of metrics.jsonl (same values at the same steps) under the run's name and group; training and evaluation
draw progress bars on a terminal (a pseudo-terminal here) and none when the output goes to a log."""
import fcntl
import glob
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from harness.core.io import REPO_ROOT, read_jsonl

pytestmark = pytest.mark.slow

# a short top-20% run (an entropy threshold exists) on the offline arithmetic data; the partial-credit reward gives a
# random tiny model's groups unequal rewards, so rows are trained on and every statistic is defined
TRAIN = ["variant=top20", "trainer.max_steps=2", "trainer.max_completion_length=16", "trainer.overlong_buffer=4",
         "data.reward=trainers.rewards:digit_fraction_reward"]
# the metrics.jsonl fields that must reach report_to (docs/training.md)
DAPO_KEYS = ("reward_mean", "response_len_mean", "entropy_mean", "entropy_threshold", "selected_frac",
             "entropy_selected_mean", "entropy_unselected_mean", "clip_frac_low", "clip_frac_high", "clip_frac_dual",
             "dropped_group_frac", "gen_batches", "n_response_tokens", "n_selected_tokens")
BAR = "%|"  # tqdm's bar: "  50%|█████     | 1/2 [...]"


def harness(args: list[str], terminal: bool, **env) -> str:
    """`harness ARGS` in a subprocess, its stdout and stderr on a pseudo-terminal or on a pipe; returns the output."""
    cmd = [sys.executable, "-m", "harness.cli", *args]
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    environ.pop("TQDM_DISABLE", None)
    if not terminal:
        p = subprocess.run(cmd, env=environ, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout + p.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns (a new pty has 0)
    p = subprocess.Popen(cmd, env=environ, cwd=REPO_ROOT, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert p.wait(timeout=900) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def expected(run_dir) -> dict[str, dict[int, float]]:
    """DAPO key -> {step: value} from metrics.jsonl (undefined values, null there, are not logged anywhere)."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    return {k: {r["step"]: r[k] for r in rows if r[k] is not None} for k in DAPO_KEYS}


def test_tensorboard_gets_the_dapo_metrics_and_a_terminal_gets_bars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    out = harness(["train", f"out={run}", *TRAIN, "trainer.report_to=tensorboard"], terminal=True)
    assert BAR in out, "no training progress bar on a terminal"
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/reward"} <= tags  # TRL's own metrics are there too
    for key, want in expected(run).items():
        assert want, f"{key}: no value in metrics.jsonl"
        got = {e.step: e.value for e in acc.Scalars(f"train/dapo/{key}")} if f"train/dapo/{key}" in tags else {}
        assert got.keys() == want.keys(), (key, got, want)
        for step, v in want.items():  # TensorBoard stores float32
            assert got[step] == pytest.approx(v, rel=1e-6, abs=1e-6), (key, step)

    # evaluation: a bar on a terminal too
    out = harness(["eval", f"checkpoint={run}", "tasks=mini_id", "limit=2", "k=2", "generation.max_gen_toks=8",
                   "bootstrap.iters=10", f"out={tmp_path / 'eval'}"], terminal=True)
    assert BAR in out, "no evaluation progress bar on a terminal"


def wandb_records(path: str) -> list:
    """The records of an offline W&B run file (run-<id>.wandb): LevelDB's log format (32 KiB blocks of records with
    a 7-byte header: crc32c, length, type FULL/FIRST/MIDDLE/LAST) after W&B's own 7-byte header, each record one
    wandb_internal_pb2.Record. This is what `wandb sync` uploads."""
    from wandb.proto import wandb_internal_pb2 as pb2

    data, block, pos = open(path, "rb").read(), 1 << 15, 7
    assert data[:4] == b":W&B", path
    payloads, part = [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += block - pos % block
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        part = chunk if kind in (1, 2) else part + chunk
        if kind in (1, 4):
            payloads.append(part)
    records = []
    for p in payloads:
        r = pb2.Record()
        r.ParseFromString(p)
        records.append(r)
    return records


def test_wandb_offline_gets_the_dapo_metrics_and_a_log_gets_no_bars(tmp_path):
    run = tmp_path / "run"
    out = harness(["train", f"out={run}", *TRAIN, "trainer.report_to=wandb", "log.run_name=mini-top20-s0-abc",
                   "log.group=mini"], terminal=False, WANDB_MODE="offline", WANDB_SILENT="true")
    assert BAR not in out and "\r" not in out, "progress bars in a log"
    (path,) = glob.glob(str(run / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = wandb_records(path)
    (meta,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (meta.display_name, meta.run_group, meta.project) == ("mini-top20-s0-abc", "mini", "entropy-harness")
    got: dict[str, dict[int, float]] = {}
    for r in records:
        if r.WhichOneof("record_type") != "history":
            continue
        items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
        for k, v in items.items():
            if k.startswith("train/dapo/"):
                got.setdefault(k.removeprefix("train/dapo/"), {})[items["train/global_step"]] = v
    for key, want in expected(run).items():
        assert got.get(key, {}).keys() == want.keys(), (key, got.get(key), want)
        for step, v in want.items():
            assert got[key][step] == pytest.approx(v, rel=1e-9), (key, step)

    out = harness(["eval", f"checkpoint={run}", "tasks=mini_id", "limit=2", "k=2", "generation.max_gen_toks=8",
                   "bootstrap.iters=10", f"out={tmp_path / 'eval'}"], terminal=False)
    assert BAR not in out and "\r" not in out, "progress bars in an evaluation log"
