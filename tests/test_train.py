"""End to end on the tiny model: every variant trains, the run directory is complete, resume works, and bad
configs are rejected before any model is loaded."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main as cli
from harness.core.config import ConfigError, load_config
from harness.core.io import read_jsonl
from trainers.train import train

VARIANT_RHO = {"full": 1.0, "top10": 0.1, "top20": 0.2, "top50": 0.5, "bottom80": 0.8, "random20": 0.2}
METRIC_KEYS = ("step", "reward_mean", "response_len_mean", "entropy_mean", "entropy_threshold", "selected_frac",
               "entropy_selected_mean", "entropy_unselected_mean", "clip_frac_low", "clip_frac_high",
               "dropped_group_frac", "gen_batches", "step_time_s", "grad_norm", "loss")


def _overrides(tmp_path, math_data_dir, *extra):
    return [f"out={tmp_path / 'run'}", "data=local", f"data.path={math_data_dir / 'math500.jsonl'}", "data.limit=16",
            "data.reward=trainers.rewards:digit_fraction_reward", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANT_RHO))
def test_variant_trains(tmp_path, math_data_dir, variant):
    out = train(load_config("train", _overrides(tmp_path, math_data_dir, f"variant={variant}",
                                                "trainer.max_steps=2")))
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert all(k in r for k in METRIC_KEYS)
        assert isinstance(r["loss"], float) and r["grad_norm"] > 0
        assert abs(r["selected_frac"] - VARIANT_RHO[variant]) <= 0.02, r["selected_frac"]
    if variant.startswith("top"):
        assert rows[0]["entropy_selected_mean"] >= rows[0]["entropy_unselected_mean"]
    if variant == "bottom80":
        assert rows[0]["entropy_selected_mean"] <= rows[0]["entropy_unselected_mean"]
    before = load_file(out / "base_model" / "model.safetensors")
    after = load_file(out / "final" / "model.safetensors")
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    for f in ("config.yaml", "provenance.json", "summary.json", "final/tokenizer.json", "final/config.json"):
        assert (out / f).exists(), f


@pytest.mark.slow
def test_resume_from_checkpoint(tmp_path, math_data_dir):
    over = _overrides(tmp_path, math_data_dir, "variant=top20", "trainer.save_steps=1")
    out = train(load_config("train", [*over, "trainer.max_steps=2"]))
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    # a complete run is returned untouched by resume=true
    mtime = (out / "summary.json").stat().st_mtime
    assert train(load_config("train", [*over, "trainer.max_steps=2", "resume=true"])) == out
    assert (out / "summary.json").stat().st_mtime == mtime
    # simulate a crash after step 2 (a stale line for step 3 was written), then continue to step 3
    (out / "summary.json").unlink()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "stale": true}\n')
    with pytest.raises(ConfigError, match="resume=true"):
        train(load_config("train", [*over, "trainer.max_steps=3"]))
    train(load_config("train", [*over, "trainer.max_steps=3", "resume=true"]))
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and "stale" not in rows[2]
    assert (out / "checkpoints" / "checkpoint-3").is_dir()


@pytest.mark.parametrize("args, message", [
    (["variant=top30"], "top20"),  # Hydra lists the valid options
    (["model=qwen3_32b"], "never published"),
    (["trainer.mask_selection=median"], "selection='median'"),
    (["mask.rho=0"], "rho"),
    (["mask.rho=1.5"], "rho"),
    (["mask.mode=middle"], "mode='middle'"),
    (["trainer.loss_normalizer=mean"], "normalizer='mean'"),
    (["trainer.mask_scope=global"], "scope='global'"),
    (["+trainer.foo=1"], "unknown trainer keys: foo"),
    (["trainer.prompts_per_update=3"], "multiple"),
    (["trainer.learning_rate=0"], "learning_rate"),
    (["trainer.num_generations=1"], "num_generations"),
    (["trainer.dual_clip=0.5"], "dual_clip"),
    (["data.loader=trainers.data:nope"], "data.loader"),
    (["data.reward=nomodule"], "data.reward"),
    (["model.path=/no/such/model"], "does not exist"),
    (["model.dtype=int8"], "model.dtype"),
    (["trainer.micro_batching=dynamic"], "micro_batching='dynamic'"),
    (["trainer.micro_batching=token_budget"], "needs micro_batch_tokens"),
    (["trainer.micro_batching=token_budget", "trainer.micro_batch_tokens=8"], "micro_batch_tokens=8"),
    (["trainer.warmup_unit=epoch"], "warmup_unit='epoch'"),
    (["trainer.warmup_unit=rollout", "trainer.lr_scheduler_type=linear"], "constant_with_warmup"),
    (["trainer.prompts_per_generation=2"], "prompts_per_generation=2"),
    (["trainer.prompts_per_generation=8", "trainer.dynamic_sampling=false"], "must equal"),
    (["trainer.log_ratio_clamp=-1"], "log_ratio_clamp"),
])
def test_bad_config_rejected_before_model_load(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert cli(["train", f"out={out}", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing built or loaded


def test_out_is_required(capsys):
    assert cli(["train"]) == 2
    assert "out is required" in capsys.readouterr().err


def test_cli_train_three_steps(tmp_path):
    """The issue's command, as written: the default data (offline arithmetic) needs no file."""
    out = tmp_path / "cli"
    rc = cli(["train", "model=tiny", "variant=top20", "trainer=dapo_cpu", "trainer.max_steps=3", f"out={out}"])
    assert rc == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    # math_reward on a random byte model: nothing is correct, every group is all-zero and dropped
    assert all(r["reward_mean"] == 0 and r["dropped_group_frac"] == 1.0 and r["gen_batches"] == 3 for r in rows)


def _prepare_hook(model_cfg):
    """A `model.prepare` hook for the test below: builds a tiny model where `model.path` says."""
    from trainers.tiny import build_tiny

    return build_tiny(model_cfg["path"], seed=5)


def test_resolve_model_path(tmp_path):
    from trainers.train import resolve_model_path

    tiny = load_config("train", ["model=tiny", "out=x"]).model
    built = resolve_model_path(tiny, tmp_path / "run")
    assert built == str(tmp_path / "run" / "base_model") and (tmp_path / "run" / "base_model" / "config.json").exists()
    cached = resolve_model_path(tiny, cache_dir=tmp_path / "cache")  # no run directory: a cache keyed by the spec
    assert cached.startswith(str(tmp_path / "cache"))
    assert resolve_model_path(tiny, cache_dir=tmp_path / "cache") == cached
    assert resolve_model_path(load_config("train", ["model=qwen3_8b", "out=x"]).model) == "Qwen/Qwen3-8B-Base"
    rel = load_config("train", ["model=qwen3_8b", "model.path=./results/x", "out=x"]).model
    assert resolve_model_path(rel).endswith("/results/x") and resolve_model_path(rel).startswith("/")
    hooked = load_config("train", ["model=tiny", f"model.path={tmp_path / 'hooked'}",
                                   "+model.prepare=test_train:_prepare_hook", "out=x"]).model
    assert resolve_model_path(hooked) == str(tmp_path / "hooked") and (tmp_path / "hooked" / "config.json").exists()


def test_too_few_problems_for_one_rollout_batch(tmp_path, math_data_dir):
    """A training set smaller than one rollout batch would train nothing: refused, nothing saved as final."""
    cfg = load_config("train", _overrides(tmp_path, math_data_dir, "data.limit=3", "trainer.max_steps=1"))
    with pytest.raises(ConfigError, match="3 problems, fewer than one rollout batch"):
        train(cfg)
    assert not (tmp_path / "run" / "final").exists()


def parity_reward(completions, **kw):
    """1 when the completion's length in characters is a multiple of 7: groups of a random model are often all 0,
    so dynamic sampling refills."""
    return [float(len(c) % 7 == 0) for c in completions]


@pytest.mark.slow
def test_resume_repeats_the_uninterrupted_run(tmp_path, math_data_dir):
    """random20 with dynamic sampling: the refill prompts and the random mask are seeded from the step, so a run
    stopped at checkpoint-2 and resumed logs exactly what the uninterrupted run logged."""
    keys = ("step", "loss", "grad_norm", "reward_mean", "entropy_mean", "selected_frac", "gen_batches",
            "dropped_group_frac", "rollout", "n_selected_tokens")

    def run(out, *extra):
        over = [f"out={out}", "data=local", f"data.path={math_data_dir / 'math500.jsonl'}", "data.limit=16", "variant=random20",
                "trainer.save_steps=2", "trainer.max_completion_length=12", "trainer.overlong_buffer=0", *extra]
        return train(load_config("train", over), reward_funcs=[parity_reward])

    ref = run(tmp_path / "ref", "trainer.max_steps=4")
    part = run(tmp_path / "part", "trainer.max_steps=2")
    (part / "summary.json").unlink()
    run(tmp_path / "part", "trainer.max_steps=4", "resume=true")
    a = [{k: r[k] for k in keys} for r in read_jsonl(ref / "metrics.jsonl")]
    b = [{k: r[k] for k in keys} for r in read_jsonl(part / "metrics.jsonl")]
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    # a refill after the resume point, or the test would not cover the refill generator
    assert any(r["gen_batches"] > 1 for r in a[2:]), [r["gen_batches"] for r in a]
    assert a == b


def test_complete_checkpoints_skip_and_drop_half_written_ones(tmp_path):
    """A kill while transformers writes a checkpoint leaves it without trainer_state.json (written last): resume
    must pick the last complete one, and the main process deletes the partial one."""
    from harness.core.rundir import complete_checkpoints

    ck = tmp_path / "checkpoints"
    for step, state in ((4, '{"global_step": 4}'), (8, '{"global_step": 8}'), (12, None), (16, '{"glob')):
        (ck / f"checkpoint-{step}").mkdir(parents=True)
        if state is not None:
            (ck / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (ck / "checkpoint-x").mkdir()
    assert list(complete_checkpoints(tmp_path)) == [4, 8]
    assert (ck / "checkpoint-12").exists()  # only listed, not deleted
    assert list(complete_checkpoints(tmp_path, drop_partial=True)) == [4, 8]
    assert not (ck / "checkpoint-12").exists() and not (ck / "checkpoint-16").exists()
