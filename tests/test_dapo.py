"""DAPO pieces: hand-computed losses, group filter, overlong shaping, batch merging, rewards, data rows, and
dynamic sampling / clip-higher inside the real trainer with scripted rewards (tiny model, CPU)."""
import math

import pytest
import torch

from harness.core.config import load_config
from harness.core.io import read_jsonl
from trainers.dapo import FILL, concat_batches, dapo_token_loss, filter_groups, rollout_warmup
from trainers.data import DAPO_PREFIX, DAPO_SUFFIX, PAPER_TEMPLATE, load_local, problem_and_answer
from trainers.rewards import digit_fraction_reward, math_reward, overlong_penalty, overlong_reward


def test_dapo_token_loss_clip_higher():
    lp = torch.zeros(1, 4)
    # ratios e^0.5 = 1.6487, e^-0.5 = 0.6065, e^0.1 = 1.1052, e^0.5 again
    old = torch.tensor([[-0.5, 0.5, -0.1, -0.5]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    loss, low, high, dual = dapo_token_loss(lp, old, adv, 0.2, 0.28)
    # token 0: A=+1, r=1.6487 -> min(1.6487, 1.28) = 1.28, loss -1.28 (high clip fires)
    # token 1: A=-1, r=0.6065 -> min(-0.6065, -0.8) = -0.8, loss 0.8 (low clip fires)
    # token 2: A=+1, r=1.1052 inside [0.8, 1.28] -> loss -1.1052
    # token 3: A=-1, r=1.6487 -> min(-1.6487, -1.28) = -1.6487, loss 1.6487 (no clip: PPO keeps the pessimistic term)
    assert loss[0].tolist() == pytest.approx([-1.28, 0.8, -math.exp(0.1), math.exp(0.5)], rel=1e-5)
    assert high.tolist() == [[True, False, False, False]] and low.tolist() == [[False, True, False, False]]
    assert not dual.any()


def test_dual_clip_caps_negative_advantage():
    lp = torch.tensor([[3.0, 3.0]])
    old = torch.zeros(1, 2)  # r = e^3 = 20.09 > c = 10
    adv = torch.tensor([[-0.5, 0.5]])
    loss, _, _, dual = dapo_token_loss(lp, old, adv, 0.2, 0.28, dual_clip=10.0)
    # A=-0.5: PPO loss = max(20.09 * 0.5, 1.28 * 0.5) = 10.04; dual-clip caps at -c A = 10 * 0.5 = 5.0
    # A=+0.5: not affected: -min(20.09 * 0.5, 1.28 * 0.5) = -0.64
    assert loss[0].tolist() == pytest.approx([5.0, -0.64])
    assert dual.tolist() == [[True, False]]


def test_log_ratio_clamp():
    lp = torch.tensor([[100.0, -30.0, 0.5]], requires_grad=True)
    old = torch.zeros(1, 3)
    adv = torch.tensor([[-1.0, 1.0, 1.0]])
    loss, _, _, dual = dapo_token_loss(lp, old, adv, 0.2, 0.28, dual_clip=10.0, log_ratio_clamp=20.0)
    # token 0: log-ratio 100 -> 20, r = e^20, A = -1: dual-clip caps the loss at c |A| = 10, no gradient
    # token 1: log-ratio -30 -> -20, r = e^-20, A = +1: loss -r = -2.06e-9, no gradient (clamped)
    # token 2: inside: r = e^0.5 = 1.6487 > 1.28, A = +1: clipped at -1.28, no gradient
    assert loss[0].tolist() == pytest.approx([10.0, -math.exp(-20.0), -1.28])
    assert dual.tolist() == [[True, False, False]]
    loss.sum().backward()
    assert lp.grad.tolist() == [[0.0, 0.0, 0.0]]
    # without the clamp, e^100 overflows to inf and the dual-clip branch back-propagates 0 * inf = NaN
    lp2 = lp.detach().clone().requires_grad_(True)
    dapo_token_loss(lp2, old, adv, 0.2, 0.28, dual_clip=10.0)[0].sum().backward()
    assert math.isnan(lp2.grad[0, 0])


def test_rollout_warmup_is_the_released_staircase():
    # 16 updates per rollout batch, 10 warm-up rollouts: lr factor = rollout / 10, constant within a rollout
    f = [rollout_warmup(s, 16, 10) for s in range(0, 176, 16)]
    assert f == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert rollout_warmup(15, 16, 10) == 0.0 and rollout_warmup(17, 16, 10) == pytest.approx(0.1)
    assert rollout_warmup(5, 16, 0) == 1.0


def test_filter_groups():
    r = torch.tensor([1., 1., 1., 0., 0., 0., 0., 0., 0.5, 0.5, 0.5, 0.5, 1., float("nan"), 0., 1.])
    # groups of 4: mixed -> keep; all 0 -> drop; all 0.5 -> drop; contains NaN -> drop
    assert filter_groups(r, 4).tolist() == [True, False, False, False]


def test_overlong_penalty_hand_computed():
    # max 20, buffer 8: free up to 12; 16 -> (12 - 16) / 8 = -0.5; 20 -> -1.0; 21 -> -1.0 (beyond the max)
    assert overlong_penalty([5, 12, 16, 20, 21], 20, 8) == [0.0, 0.0, -0.5, -1.0, -1.0]
    assert overlong_penalty([16], 20, 8, factor=0.5) == [-0.25]
    f = overlong_reward(20, 8)
    assert f.__name__ == "overlong_penalty" and f(["a", "b"], completion_ids=[[1] * 14, [1] * 3]) == [-0.25, 0.0]
    with pytest.raises(ValueError, match="buffer"):
        overlong_reward(20, 0)


def test_concat_batches_repads():
    a = {"prompt_ids": torch.tensor([[5, 6]]), "prompt_mask": torch.tensor([[1, 1]]),
         "completion_ids": torch.tensor([[7]]), "completion_mask": torch.tensor([[1]]),
         "advantages": torch.tensor([0.5]), "num_items_in_batch": torch.tensor(1)}
    b = {"prompt_ids": torch.tensor([[4, 5, 6]]), "prompt_mask": torch.tensor([[1, 1, 1]]),
         "completion_ids": torch.tensor([[8, 9]]), "completion_mask": torch.tensor([[1, 1]]),
         "advantages": torch.tensor([-0.5]), "num_items_in_batch": torch.tensor(2)}
    m = concat_batches([a, b], pad_id=0)
    assert m["prompt_ids"].tolist() == [[0, 5, 6], [4, 5, 6]] and m["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert m["completion_ids"].tolist() == [[7, 0], [8, 9]] and m["completion_mask"].tolist() == [[1, 0], [1, 1]]
    assert m["advantages"].tolist() == [0.5, -0.5]
    with pytest.raises(NotImplementedError, match="pixel"):
        concat_batches([{**a, "pixel": {"x": 1}}, {**b, "pixel": {"x": 1}}], 0)


def test_math_reward_uses_the_answer_checker():
    got = math_reward(["so \\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{3}", "no box", "\\boxed{"],
                      ["0.5", "\\frac12", "4", "1", "1"])
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert digit_fraction_reward(["a1b2", "", "xx"]) == [0.5, 0.0, 0.0]


def test_problem_and_answer_rows(tmp_path):
    raw = {"prompt": [{"role": "user", "content": DAPO_PREFIX + "What is 1+1?" + DAPO_SUFFIX}],
           "reward_model": {"ground_truth": "2", "style": "rule"}}
    assert problem_and_answer(raw) == ("What is 1+1?", "2")
    assert problem_and_answer({"question": "Q", "answer": ["7", "7.0"]}) == ("Q", "7")
    with pytest.raises(ValueError, match="columns"):
        problem_and_answer({"text": "x"})
    # de-duplication (DAPO-Math-17K repeats each problem) and the paper template
    import pandas as pd

    pd.DataFrame([raw, raw, {**raw, "reward_model": {"ground_truth": "3"},
                            "prompt": [{"role": "user", "content": "Other"}]}]).to_parquet(tmp_path / "d.parquet")
    ds = load_local({"path": str(tmp_path / "d.parquet"), "template": PAPER_TEMPLATE})
    assert ds["answer"] == ["2", "3"]
    assert ds["prompt"][0] == ("User:\nWhat is 1+1?\nPlease reason step by step, and put your final answer within "
                               "\\boxed{}.\n\nAssistant:\n")


# ------------------------------------------------- the trainer with scripted rewards

def _cfg(tmp_path, math_data_dir, *extra):
    return load_config("train", [f"out={tmp_path / 'run'}", "data=local", f"data.path={math_data_dir / 'math500.jsonl'}",
                                 "data.limit=16", "trainer.overlong_buffer=0", *extra])


def _scripted(script, G=4):
    """A reward whose n-th call gives group kinds script[n] ('same': all 1; 'vary': one 1 then 0s)."""
    calls = []

    def scripted_reward(completions, **kw):
        kinds = script[min(len(calls), len(script) - 1)]
        calls.append(len(completions))
        assert len(completions) == G * len(kinds)
        return [r for k in kinds for r in ([1.0] * G if k == "same" else [1.0] + [0.0] * (G - 1))]
    return scripted_reward, calls


def test_dynamic_sampling_refills_the_batch(tmp_path, math_data_dir):
    from trainers.train import train

    reward, calls = _scripted([["same", "vary", "same", "vary"], ["vary"] * 4])
    out = train(_cfg(tmp_path, math_data_dir, "trainer.max_steps=2"), reward_funcs=[reward])
    rows = read_jsonl(out / "metrics.jsonl")
    # 4 groups generated, 2 all-equal dropped -> one refill of 4 groups, all kept: 2 dropped of 8 generated
    assert calls == [16, 16]
    assert rows[0]["gen_batches"] == 2 and rows[0]["dropped_group_frac"] == pytest.approx(2 / 8)
    assert rows[1]["rollout"] == rows[0]["rollout"] == 1  # 2 optimiser steps on the same rollout batch


def test_dynamic_sampling_stops_at_max_num_gen_batches(tmp_path, math_data_dir):
    from trainers.train import make_trainer

    reward, calls = _scripted([["same"] * 4])
    trainer = make_trainer(_cfg(tmp_path, math_data_dir, "trainer.max_steps=1", "trainer.max_num_gen_batches=3"),
                           reward_funcs=[reward])
    trainer.train()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert calls == [16, 16, 16]  # gave up after max_num_gen_batches = 3
    assert rows[0]["gen_batches"] == 3 and rows[0]["dropped_group_frac"] == 1.0
    # the batch was filled with dropped groups: zero advantage everywhere, so no policy gradient; and fill rows
    # take no top-k slot and count in no normaliser or token statistic
    adv = torch.cat([b["advantages"] for b in trainer._buffered_inputs])
    assert adv.numel() == 16 and torch.all(adv == 0)
    assert all(b[FILL].all() for b in trainer._buffered_inputs)
    assert rows[0]["n_response_tokens"] == 0 and rows[0]["n_selected_tokens"] == 0 and rows[0]["loss"] == 0


def test_fill_rows_leave_the_pool_and_the_normaliser(tmp_path, math_data_dir):
    """Two groups kept, two filled: the mask pool, the token counts and the pool shares see only the kept rows."""
    from trainers.train import make_trainer

    reward, calls = _scripted([["vary", "same", "vary", "same"]])
    trainer = make_trainer(_cfg(tmp_path, math_data_dir, "trainer.max_steps=1", "trainer.max_num_gen_batches=1",
                                "trainer.prompts_per_update=4", "trainer.micro_batch_size=4", "variant=top20"),
                           reward_funcs=[reward])
    trainer.train()
    row = read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]
    chunks = trainer._buffered_inputs
    fill = torch.cat([c[FILL] for c in chunks])
    assert int(fill.sum()) == 8 and row["gen_batches"] == 1
    real_tokens = sum(int((c["completion_mask"].sum(1) * ~c[FILL]).sum()) for c in chunks)
    assert row["n_response_tokens"] == real_tokens
    assert row["n_selected_tokens"] == sum(math.ceil(0.2 * int((c["completion_mask"].sum(1) * ~c[FILL]).sum()))
                                           for c in chunks if (~c[FILL]).any())
    # each micro-batch's share is its kept rows / the mini-batch's kept rows
    shares = [c["dapo_plan"].pools[0][1].share for c in chunks]
    assert shares == [int((~c[FILL]).sum()) / 8 for c in chunks] and sum(shares) == 1.0


def test_generation_rounds_of_three_rollout_batches(tmp_path, math_data_dir):
    """prompts_per_generation = 3 x the rollout batch (the released gen_batch_size): one round of 12 prompts
    keeps enough groups; the first 4 kept groups form the batch."""
    from trainers.train import train

    reward, calls = _scripted([["same", "vary", "same", "vary", "vary", "same", "vary", "vary", "same", "same", "same",
                                "vary"]])
    out = train(_cfg(tmp_path, math_data_dir, "trainer.max_steps=1", "trainer.prompts_per_generation=12"),
                reward_funcs=[reward])
    row = read_jsonl(out / "metrics.jsonl")[0]
    assert calls == [48] and row["gen_batches"] == 1 and row["dropped_group_frac"] == pytest.approx(6 / 12)


def test_warmup_counted_in_rollout_batches(tmp_path, math_data_dir):
    """warmup_unit=rollout: 2 optimiser steps per rollout batch, 2 warm-up rollouts: lr 0, 0, lr/2, lr/2, lr."""
    from trainers.train import train

    out = train(_cfg(tmp_path, math_data_dir, "trainer.max_steps=5", "trainer.warmup_unit=rollout",
                     "trainer.warmup_steps=2", "trainer.lr_scheduler_type=constant_with_warmup",
                     "trainer.max_completion_length=8", "data.reward=trainers.rewards:digit_fraction_reward"))
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["learning_rate"] for r in rows] == pytest.approx([0.0, 0.0, 5e-4, 5e-4, 1e-3])


def test_without_dynamic_sampling_one_generation(tmp_path, math_data_dir):
    from trainers.train import train

    reward, calls = _scripted([["same"] * 4])
    out = train(_cfg(tmp_path, math_data_dir, "trainer.max_steps=1", "trainer.dynamic_sampling=false"),
                reward_funcs=[reward])
    row = read_jsonl(out / "metrics.jsonl")[0]
    assert calls == [16] and row["gen_batches"] == 1 and row["dropped_group_frac"] == 0.0


def test_clip_higher_fires_with_several_updates_per_rollout(tmp_path, math_data_dir):
    from trainers.train import train

    out = train(_cfg(tmp_path, math_data_dir, "trainer.max_steps=2", "trainer.learning_rate=0.05",
                     "data.reward=trainers.rewards:digit_fraction_reward"))
    rows = read_jsonl(out / "metrics.jsonl")
    # step 1 is on-policy (ratio 1); step 2 reuses the rollout after one update, so some ratios leave [0.8, 1.28]
    assert rows[0]["clip_frac_low"] == 0 and rows[0]["clip_frac_high"] == 0
    assert rows[1]["clip_frac_low"] + rows[1]["clip_frac_high"] > 0


def test_mask_truncated_drops_truncated_responses(tmp_path, math_data_dir):
    """With mask_truncated=true, truncated responses leave the loss and the threshold (TRL's option); the logged
    response length still counts them."""
    from trainers.train import train

    rows = {}
    for flag in ("false", "true"):
        out = train(load_config("train", [f"out={tmp_path / flag}", "data=local", f"data.path={math_data_dir / 'math500.jsonl'}",
                                          "data.limit=16", "trainer.max_steps=1", f"trainer.mask_truncated={flag}",
                                          "data.reward=trainers.rewards:digit_fraction_reward"]))
        rows[flag] = read_jsonl(out / "metrics.jsonl")[0]
    # same seed, same model: the same rollouts; a random byte model almost never stops within 32 tokens
    assert rows["true"]["response_len_mean"] == rows["false"]["response_len_mean"] > 28
    assert rows["true"]["n_response_tokens"] < rows["false"]["n_response_tokens"] / 2


def test_arithmetic_data_is_offline_and_deterministic():
    from trainers.data import load_arithmetic

    a, b = load_arithmetic({"n": 20, "seed": 3}), load_arithmetic({"n": 20, "seed": 3})
    assert a["prompt"] == b["prompt"] and a["prompt"] != load_arithmetic({"n": 20, "seed": 4})["prompt"]
    for problem, answer in zip(a["problem"], a["answer"]):
        expr = problem.removeprefix("What is $").removesuffix("$?").replace("\\times", "*")
        assert str(eval(expr)) == answer  # noqa: S307 (our own generated "a + b" / "a * b")
    assert math_reward(["\\boxed{" + a["answer"][0] + "}"], [a["answer"][0]]) == [1.0]


@pytest.mark.parametrize("master", [True, False])
def test_fp32_master_weights_keep_small_updates(tmp_path, math_data_dir, master):
    """bf16 compute at lr 1e-6 for one step: with fp32 master weights every weight tensor moves (the released
    actor keeps float32 parameters); with bf16 weights almost every update rounds away (an update of ~1e-6 is
    below half a bf16 step, 2^-8 relative, for every weight larger than ~1e-4)."""
    from safetensors.torch import load_file

    from trainers.train import train

    out = train(_cfg(tmp_path, math_data_dir, "trainer.max_steps=1", "trainer.learning_rate=1e-6", "trainer.bf16=true",
                     f"trainer.fp32_master_weights={str(master).lower()}", "model.dtype=bfloat16",
                     "trainer.max_completion_length=8", "data.reward=trainers.rewards:digit_fraction_reward"))
    before = load_file(out / "base_model" / "model.safetensors")
    after = load_file(out / "final" / "model.safetensors")
    assert after["model.norm.weight"].dtype == (torch.float32 if master else torch.bfloat16)
    # the base model is stored in float32; bf16 weights start from its bf16 rounding
    changed = sum(int((after[k] != before[k].to(after[k].dtype)).sum()) for k in before)
    total = sum(before[k].numel() for k in before)
    if master:
        assert changed / total > 0.95, changed / total
    else:
        assert changed / total < 0.1, changed / total
