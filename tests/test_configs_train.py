"""Every training config composes and validates; every trainer key is in the schema and documented."""
import dataclasses
import re

import pytest

from harness.core.config import ConfigError, load_config
from harness.core.io import CONFIG_DIR, REPO_ROOT
from trainers.masks import check_mask_args
from trainers.train import TrainerSpec, validate


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).rglob("*.yaml"))


GROUP_OPTIONS = [(g, o) for g in ("model", "trainer", "variant", "data") for o in _options(g)]


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_and_validates(tmp_path, group, option):
    """Each option of each group (the others at their defaults) composes and passes validation, no model loaded."""
    over = [f"{group}={option}", f"out={tmp_path / 'run'}"]
    cfg = load_config("train", over)
    try:
        plan = validate(cfg)
    except ConfigError as e:  # a model or data file that must be given: any existing one will do
        if group == "data":
            assert "data.path is required" in str(e), e
            rows = tmp_path / "rows.jsonl"
            rows.write_text('{"problem": "1 + 1", "answer": "2"}\n')
            plan = validate(load_config("train", [*over, f"data.path={rows}"]))
        else:
            assert group == "model" and re.search("never published|does not exist", str(e)), e
            plan = validate(load_config("train", [*over, f"model.path={tmp_path}"]))
    assert plan.grad_accum >= 1 and plan.steps_per_generation % plan.grad_accum == 0
    assert {"trainer": plan.spec.name, "variant": cfg.mask.name}.get(group, option) == option


def test_qwen3_32b_asks_for_a_path(tmp_path):
    with pytest.raises(ConfigError, match="never published.*model.path="):
        validate(load_config("train", ["model=qwen3_32b", f"out={tmp_path}"]))


@pytest.mark.parametrize("variant", _options("variant"))
def test_variant_is_a_mask_block(variant):
    text = (CONFIG_DIR / "variant" / f"{variant}.yaml").read_text()
    assert text.startswith("# @package mask")
    cfg = load_config("train", [f"variant={variant}", "out=x"])
    assert set(cfg.mask) == {"name", "mode", "rho"}
    check_mask_args(cfg.mask.mode, cfg.mask.rho)


def test_every_trainer_key_is_documented():
    doc = (REPO_ROOT / "docs" / "training.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", doc, flags=re.M))
    fields = {f.name for f in dataclasses.fields(TrainerSpec)}
    assert fields - documented == set(), "trainer keys missing from docs/training.md"
    for preset in _options("trainer"):
        keys = set(load_config("train", [f"trainer={preset}", "out=x"]).trainer)
        assert keys == fields, (preset, keys ^ fields)


def test_paper_preset_cites_a_source_for_every_key():
    for line in (CONFIG_DIR / "trainer" / "dapo_paper.yaml").read_text().splitlines():
        if re.match(r"^\w+:", line) and not line.startswith("name:"):
            assert "#" in line, f"dapo_paper.yaml: no source comment on {line!r}"


def test_paper_preset_is_the_released_update(tmp_path):
    """dapo_paper's choices reach the trainer: token-budget pools, clamp, warm-up per rollout batch, 3x generation
    rounds, no TRL importance-sampling correction (vLLM is off here only because CI has none)."""
    from trainers.train import grpo_args

    plan = validate(load_config("train", ["trainer=dapo_paper", "trainer.use_vllm=false", f"out={tmp_path}"]))
    d = plan.dapo
    assert (d.micro_batching, d.micro_batch_tokens) == ("token_budget", 180224)
    assert (d.log_ratio_clamp, d.dual_clip) == (20.0, 10.0)
    assert (d.warmup_unit, d.updates_per_rollout, d.generation_prompts) == ("rollout", 16, 1536)
    assert plan.spec.fp32_master_weights and plan.spec.max_steps == 1360
    args = grpo_args(plan, 0)
    assert args.vllm_importance_sampling_correction is False and args.warmup_steps == 10
