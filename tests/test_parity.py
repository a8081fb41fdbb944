"""Parity with the released update: our trainer's loss and gradients on one rollout mini-batch equal a plain
transcription of the released micro-batch update, for the masks top, bottom, random and all.

The reference below is transcribed from github.com/Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR at commit 6f5dda6f
(a patch of verl, Apache-2.0):
- `verl/trainer/ppo/core_algos.py` lines 53-87 `get_global_entropy_top_mask` (the top-k mask) and lines 921-1009
  `compute_policy_loss_vanilla` (log-ratio clamp +-20, clip-higher, dual-clip, token mean via `agg_loss`
  "token-mean" = `verl_F.masked_mean`: sum / (count + 1e-8));
- `verl/workers/actor/dp_actor.py` lines 375-530 `update_policy` (per micro-batch: forward, mask, loss, times
  `loss_scale_factor` = micro-batch rows / mini-batch rows with `use_dynamic_bsz`, 1 / gradient accumulation
  without; backward per micro-batch).
The released code has only the top mask; `bottom` is its top-k on -entropy and `random` its top-k on the uniform
keys our generator draws for that pool (the same draw), which is what those modes mean here.

The batch is a real rollout of a tiny random Qwen3 (TRL generation, our dynamic-sampling output), with
continuous entropies (the final norm is scaled so entropies spread over 0.4-4.5 nats), off-policy old
log-probabilities (so clip-higher, dual-clip and the clamp all fire) and two zero-advantage fill rows, which the
reference simply does not have (the released code never fills a batch).
"""
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.utils import split_tensor_dict

from harness.core.config import load_config, to_dict
from trainers.dapo import FILL, _seed
from trainers.microbatch import micro_batch_count, token_budget_micro_batches

G, PROMPTS, BUDGET = 4, 4, 600  # 16 rows of ~110 prompt + <= 32 response tokens: 3-4 token-budget pools


# ------------------------------------------------------------------ the released update, transcribed
def released_top_mask(entropy, response_mask, top_ratio):
    """core_algos.py 53-87: exactly max(1, int(N * ratio + 0.9999)) response tokens by torch.topk."""
    flat_entropy = entropy.flatten()
    flat_mask = response_mask.flatten().bool()
    response_entropy = flat_entropy[flat_mask]
    if response_entropy.numel() == 0:
        return torch.zeros_like(entropy, dtype=torch.long)
    top_k = max(1, int(len(response_entropy) * top_ratio + 0.9999))
    _, topk_idx = torch.topk(response_entropy, k=top_k)
    response_positions = flat_mask.nonzero(as_tuple=False).squeeze(1)
    flat_out = torch.zeros_like(flat_entropy, dtype=torch.long)
    flat_out[response_positions[topk_idx]] = 1
    return flat_out.view_as(entropy)


def released_policy_loss(old_log_prob, log_prob, advantages, response_mask, clip_low, clip_high, clip_ratio_c,
                         entropy_top_mask):
    """core_algos.py 921-1009 (compute_policy_loss_vanilla, token-mean aggregation)."""
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    loss_mask = response_mask if entropy_top_mask is None else response_mask * entropy_top_mask
    return (pg_losses * loss_mask).sum() / (loss_mask.sum() + 1e-8)  # verl_F.masked_mean


def forward(model, mb, temperature):
    """log-probs and entropies [B, T] of the response tokens at `temperature` (the actor's _forward_micro_batch)."""
    ids = torch.cat([mb["prompt_ids"], mb["completion_ids"]], 1)
    att = torch.cat([mb["prompt_mask"], mb["completion_mask"]], 1)
    T = mb["completion_ids"].size(1)
    logits = model(input_ids=ids, attention_mask=att).logits[:, -T - 1:-1].float() / temperature
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(-1, mb["completion_ids"].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def released_update(model, micro_batches, mini_batch_rows, mode, rho, cfg, step):
    """dp_actor.py 375-530: per micro-batch forward, mask, loss * rows / mini-batch rows, backward. Returns the
    summed loss (the grads accumulate in the model). A fill row (ours only) enters as a row without response
    tokens and without a row count."""
    total = 0.0
    for m, mb in enumerate(micro_batches):
        log_prob, entropy = forward(model, mb, cfg.temperature)
        response_mask = mb["completion_mask"].float() * ~mb[FILL].unsqueeze(1)
        if mode == "all":
            mask = None
        elif mode == "top":
            mask = released_top_mask(entropy.detach(), response_mask, rho)
        elif mode == "bottom":
            mask = released_top_mask(-entropy.detach(), response_mask, rho)
        else:  # random: the same uniform keys our generator draws for this pool
            g = torch.Generator().manual_seed(_seed(cfg.seed, step, m))
            mask = released_top_mask(torch.rand(entropy.numel(), generator=g).view_as(entropy), response_mask, rho)
        pg_loss = released_policy_loss(mb["old_per_token_logps"], log_prob, mb["advantages"].unsqueeze(1),
                                       response_mask, cfg.epsilon_low, cfg.epsilon_high, cfg.dual_clip, mask)
        loss = pg_loss * (int((~mb[FILL]).sum()) / mini_batch_rows)  # loss_scale_factor
        loss.backward()
        total += float(loss.detach())
    return total


# ------------------------------------------------------------------ the batch and our trainer
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from trainers.train import make_trainer

    out = tmp_path_factory.mktemp("parity") / "run"
    cfg = load_config("train", [
        f"out={out}", "model=tiny", "trainer=dapo_cpu", "data=arith",
        "data.reward=trainers.rewards:digit_fraction_reward",
        f"trainer.prompts_per_rollout={PROMPTS}", f"trainer.prompts_per_update={PROMPTS}",
        f"trainer.prompts_per_generation={PROMPTS}", f"trainer.num_generations={G}", "trainer.micro_batch_size=4",
        "trainer.overlong_buffer=0", "trainer.dynamic_sampling=false", "trainer.log_ratio_clamp=20.0", "seed=3"])
    trainer = make_trainer(cfg)
    model = trainer.model
    with torch.no_grad():
        model.model.norm.weight.mul_(20.0)  # spread the entropies (a random tiny model is near-uniform)
    model.train()
    ds = trainer.train_dataset
    batch = trainer._generate_and_score_completions([dict(ds[i]) for i in range(PROMPTS) for _ in range(G)])
    n = batch["completion_ids"].size(0)
    batch[FILL] = torch.zeros(n, dtype=torch.bool)
    batch[FILL][[6, 13]] = True  # two zero-advantage fill rows
    batch["advantages"][[6, 13]] = 0.0
    with torch.no_grad():  # off-policy old log-probs: noise, and tokens far outside the +-20 clamp
        logp, _ = forward(model, batch, cfg.trainer.temperature)
        gen = torch.Generator().manual_seed(0)
        old = logp + 0.4 * torch.randn(logp.shape, generator=gen)
        old[0, 0], old[5, 1], old[9, 2] = logp[0, 0] + 25.0, logp[5, 1] - 25.0, logp[9, 2] + 30.0
        neg = int((batch["advantages"] < 0).nonzero()[0])  # log-ratio +100 where A < 0: exp overflows without
        old[neg, 3] = logp[neg, 3] - 100.0  # the clamp and the dual-clip branch back-propagates 0 * inf = NaN
    batch["old_per_token_logps"] = old * batch["completion_mask"]
    return trainer, cfg, batch


def _ours(trainer, batch, chunks_n):
    chunks = split_tensor_dict(batch, chunks_n)
    trainer.current_gradient_accumulation_steps = chunks_n
    trainer.model.zero_grad(set_to_none=True)
    trainer._plan_mini_batch(chunks)
    loss = 0.0
    for c in chunks:
        part = trainer.compute_loss(trainer.model, c)
        part.backward()
        loss += float(part.detach())
    return loss, {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}


def _reference(trainer, cfg, batch, micro_rows):
    """The released update, micro-batches given as row lists of `batch`; the mini-batch rows are the real ones."""
    mbs = [{k: v[torch.tensor(rows)] for k, v in batch.items() if torch.is_tensor(v) and v.ndim >= 1}
           for rows in micro_rows]
    trainer.model.zero_grad(set_to_none=True)
    settings = SimpleNamespace(**to_dict(cfg.trainer), seed=cfg.seed)
    loss = released_update(trainer.model, mbs, int((~batch[FILL]).sum()), trainer.dapo.mask_mode,
                           trainer.dapo.mask_rho, settings, trainer.state.global_step)
    return loss, {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}


MODES = [("top", 0.2), ("bottom", 0.8), ("random", 0.2), ("all", 1.0)]


@pytest.mark.parametrize("micro_batching, chunks_n", [("token_budget", 4), ("token_budget", 1), ("fixed", 4)],
                         ids=["token_budget-prepass", "token_budget-in_step", "fixed"])
@pytest.mark.parametrize("mode, rho", MODES, ids=[m for m, _ in MODES])
def test_update_equals_released(setup, micro_batching, chunks_n, mode, rho):
    trainer, cfg, batch = setup
    o = trainer.dapo
    o.mask_mode, o.mask_rho, o.micro_batching, o.micro_batch_tokens = mode, rho, micro_batching, BUDGET
    real = (~batch[FILL]).nonzero().squeeze(1).tolist()
    if micro_batching == "token_budget":  # the released partition of the real rows (tests/test_microbatch.py)
        seqlens = (batch["prompt_mask"].sum(1) + batch["completion_mask"].sum(1)).tolist()
        lens = [seqlens[r] for r in real]
        groups = token_budget_micro_batches(lens, micro_batch_count(lens, BUDGET))
        micro_rows = [[real[j] for j in g] for g in groups]
        assert len(micro_rows) >= 3  # several pools, of different sizes
    else:  # released use_dynamic_bsz=False: consecutive micro-batches of the mini-batch
        size = batch[FILL].numel() // chunks_n
        micro_rows = [list(range(k * size, (k + 1) * size)) for k in range(chunks_n)]
    loss, grads = _ours(trainer, batch, chunks_n)
    ref_loss, ref_grads = _reference(trainer, cfg, batch, micro_rows)
    assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-7)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for k in grads:
        scale = float(ref_grads[k].abs().max())
        assert torch.allclose(grads[k], ref_grads[k], rtol=1e-4, atol=1e-5 * scale + 1e-12), \
            (k, float((grads[k] - ref_grads[k]).abs().max()), scale)


def test_the_batch_exercises_every_branch(setup):
    """The batch is not degenerate: continuous entropies, clipped, dual-clipped and clamped tokens, mixed
    advantage signs, ragged responses, fill rows."""
    trainer, cfg, batch = setup
    with torch.no_grad():
        logp, ent = forward(trainer.model, batch, cfg.trainer.temperature)
    m = batch["completion_mask"].bool() & ~batch[FILL].unsqueeze(1)
    e = ent[m]
    # spread over nats; the only ties are genuine (the G responses of a prompt share their first context)
    assert float(e.max() - e.min()) > 2.0 and e.unique().numel() >= 0.85 * e.numel()
    lr = (logp - batch["old_per_token_logps"])[m]
    ratio, adv = lr.exp(), batch["advantages"].unsqueeze(1).expand_as(m)[m]
    assert ((ratio > 1 + cfg.trainer.epsilon_high) & (adv > 0)).any()
    assert ((ratio < 1 - cfg.trainer.epsilon_low) & (adv < 0)).any()
    assert ((ratio > cfg.trainer.dual_clip) & (adv < 0)).any() or ((lr.abs() > 20) & (adv < 0)).any()
    assert (lr.abs() > 20).sum() >= 3 and (lr > 20).any()
    assert (adv > 0).any() and (adv < 0).any()
    assert batch[FILL].sum() == 2
