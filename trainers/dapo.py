"""DAPO with an entropy token mask, as a narrow subclass of TRL's GRPOTrainer.

What is overridden (everything else, including the training loop, generation and checkpointing, is TRL's):
- `_compute_loss`: the DAPO token-level clipped loss (clip-higher eps_low/eps_high, optional dual-clip c and
  log-ratio clamp), no KL, no entropy bonus, restricted to the tokens chosen by `trainers.masks.select_tokens`
  within each mask pool and normalised by `masks.aggregate_loss`. The pure pieces are `dapo_token_loss` (here),
  `masks.select_tokens` / `masks.aggregate_loss` and `trainers.microbatch` (the released token-budget partition).
- `_prepare_inputs`: at the first micro-step of each optimiser step, plans the mini-batch's mask pools
  (`micro_batching`): `fixed` = each forward micro-batch is one pool (TRL; the released code with
  `use_dynamic_bsz=False`); `token_budget` = the released `use_dynamic_bsz=True` micro-batches (a token budget per
  pool, Karmarkar-Karp balanced), each weighted by its rows / the mini-batch rows. A pool that spans several
  forward micro-batches gets its mask from one extra no-grad entropy pass over the mini-batch with the current
  weights (the released code takes the entropies from the gradient pass itself: the same numbers up to float
  rounding).
- `_generate_and_score_completions`: dynamic sampling (DAPO section 3.2), which TRL lacks: prompt groups whose
  task rewards are all equal are dropped and new prompts are generated (generation rounds of
  `generation_prompts` prompts, up to `max_num_gen_batches` rounds) until the batch is full. `filter_groups` is
  the pure decision.
- `_calculate_rewards`: only records the per-function rewards so the filter can read the task reward.
- `create_scheduler`: `warmup_unit="rollout"` counts the warm-up in rollout batches, as the released scheduler
  (stepped once per rollout batch) does; `"step"` is transformers' per-optimiser-step warm-up.
- `log`: writes one line per optimiser step to `metrics.jsonl` and passes the same numbers to TRL's `report_to`
  (TensorBoard, W&B) as `dapo/<key>`.

Deviations, stated plainly:
- If the batch is still not full after `max_num_gen_batches` generation rounds, it is filled with the most
  recently dropped groups with their advantage set to 0 and marked as fill rows: they carry no policy gradient
  (not even from the overlong penalty), take no top-k slot and count in no normaliser, pool share or token
  statistic. The released code raises an error instead; `gen_batches` and `dropped_group_frac` in metrics.jsonl
  show when this happens.
- Refill prompts (and the extra prompts of the first round when `generation_prompts` exceeds the rollout batch)
  are drawn uniformly from the training set with a seeded generator (per rank), not from the epoch's sampler, so
  a refill can repeat a prompt of the current epoch. Groups are kept per rank, not over the global batch.
- Rows reach a mini-batch by TRL's uniform shuffle of each rank's rollout rows; the released trainer reorders the
  rollout across ranks by Karmarkar-Karp (`balance_batch`) and slices mini-batches in order. The pools inside a
  mini-batch are the released ones; which rows share a mini-batch is not (docs/training.md measures the gap).
- Text-only: multimodal inputs and a KL term (beta != 0) are rejected.
- Clip fractions are measured over the selected tokens (the ones that receive gradient); TRL measures them over
  all response tokens.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from harness.core.io import append_jsonl
from trainers.masks import Pool, aggregate_loss, check_mask_args, check_normalizer, select_tokens
from trainers.microbatch import micro_batch_count, token_budget_micro_batches

MICRO_BATCHING = ("fixed", "token_budget")
WARMUP_UNITS = ("step", "rollout")

LEFT_PADDED = {"prompt_ids": "pad", "prompt_mask": 0}
RIGHT_PADDED = {"completion_ids": "pad", "completion_mask": 0, "old_per_token_logps": 0.0,
                "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0, "tool_mask": 1,
                "importance_sampling_ratio": 0.0}
FILL = "dapo_fill"  # bool [B]: a zero-advantage fill row of a batch dynamic sampling could not fill
PLAN = "dapo_plan"  # the mask pools of a forward micro-batch (set by DAPOTrainer._plan_mini_batch)


@dataclass
class DAPOOptions:
    """The DAPO and token-mask options that TRL's GRPOConfig does not have (see docs/training.md)."""
    mask_mode: str = "all"  # all | top | bottom | random (paper section 4)
    mask_rho: float = 1.0  # fraction of response tokens kept, in (0, 1]
    mask_selection: str = "topk"  # topk (released code) | quantile (TRL)
    mask_scope: str = "local"  # local: per pool and rank (released code) | gathered over ranks (TRL)
    loss_normalizer: str = "selected"  # selected (paper section 5.1 (ii), released code) | all (TRL)
    micro_batching: str = "fixed"  # fixed: forward micro-batch = pool (TRL) | token_budget (released dynamic bsz)
    micro_batch_tokens: int | None = None  # token_budget: tokens (prompt + response) per pool and rank
    dual_clip: float | None = None  # dual-clip constant c (released code: 10.0); None = off
    log_ratio_clamp: float | None = None  # clamp log(ratio) to [-c, c] before exp (released code: 20); None = off
    dynamic_sampling: bool = True  # drop all-equal-reward groups and refill (DAPO section 3.2)
    max_num_gen_batches: int = 10  # generation rounds per rollout batch at most (DAPO recipe: 10)
    generation_prompts: int | None = None  # prompts per generation round on this rank; None = the rollout batch
    warmup_unit: str = "step"  # step (transformers) | rollout (released: the scheduler steps once per rollout)
    updates_per_rollout: int = 1  # optimiser steps per rollout batch (for warmup_unit="rollout")
    engine_dtype: str | None = None  # vLLM engine dtype; None = the model's (with fp32 masters: model.dtype, bf16)
    task_reward_index: int = 0  # which reward function decides "all equal" for dynamic sampling
    metrics_path: str | None = None  # metrics.jsonl to append to (main process only)
    seed: int = 0  # seeds refill sampling and the random mask

    def __post_init__(self):
        check_mask_args(self.mask_mode, self.mask_rho, self.mask_selection, self.mask_scope)
        check_normalizer(self.loss_normalizer)
        if self.dual_clip is not None and not self.dual_clip > 1.0:
            raise ValueError(f"dual_clip must be > 1 (released code: 10.0) or null, got {self.dual_clip}")
        if self.log_ratio_clamp is not None and not self.log_ratio_clamp > 0:
            raise ValueError(f"log_ratio_clamp must be > 0 (released code: 20.0) or null, got {self.log_ratio_clamp}")
        if not isinstance(self.max_num_gen_batches, int) or self.max_num_gen_batches < 1:
            raise ValueError(f"max_num_gen_batches must be a positive integer, got {self.max_num_gen_batches}")
        if self.micro_batching not in MICRO_BATCHING:
            raise ValueError(f"micro_batching={self.micro_batching!r} is not valid; choose one of: "
                             f"{', '.join(MICRO_BATCHING)}")
        if self.micro_batching == "token_budget" and (isinstance(self.micro_batch_tokens, bool) or not isinstance(
                self.micro_batch_tokens, int) or self.micro_batch_tokens < 1):
            raise ValueError(f"micro_batching='token_budget' needs micro_batch_tokens, a positive integer (released "
                             f"code: 22528 x 8 = 180224), got {self.micro_batch_tokens!r}")
        if self.warmup_unit not in WARMUP_UNITS:
            raise ValueError(f"warmup_unit={self.warmup_unit!r} is not valid; choose one of: {', '.join(WARMUP_UNITS)}")


@dataclass
class PoolPlan:
    """The mask pools of one forward micro-batch: `pools[i].rows` index its rows; `selected` [B, T] is set when
    the pools were selected before the micro-step (a pool spanning several micro-batches), else None."""
    pools: list[tuple[int, Pool]]  # (pool index within the optimiser step, Pool)
    selected: torch.Tensor | None


def dapo_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, eps_low: float,
                    eps_high: float, dual_clip: float | None = None, log_ratio_clamp: float | None = None):
    """Per-token DAPO loss [B, T] and the clip indicators.

    logp, old_logp: [B, T]; adv: [B, 1] (or [B, T]). ratio r = exp(logp - old_logp), with logp - old_logp clamped
    to [-log_ratio_clamp, log_ratio_clamp] first when given (the released code clamps at 20 "for stability").
    loss = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A); with dual-clip c and A < 0 the loss is capped at -c A.
    Returns (loss, low_clipped, high_clipped, dual_clipped), the indicators as bool [B, T].
    """
    log_ratio = logp - old_logp  # [B, T]
    if log_ratio_clamp is not None:
        log_ratio = torch.clamp(log_ratio, min=-log_ratio_clamp, max=log_ratio_clamp)
    ratio = torch.exp(log_ratio)  # [B, T]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)  # [B, T]
    loss = torch.maximum(-ratio * adv, -clipped * adv)  # [B, T]
    low = (ratio < 1 - eps_low) & (adv < 0)
    high = (ratio > 1 + eps_high) & (adv > 0)
    dual = torch.zeros_like(low)
    if dual_clip is not None:
        cap = -dual_clip * adv  # [B, 1], positive where A < 0
        dual = (adv < 0) & (loss > cap)
        loss = torch.where(adv < 0, torch.minimum(loss, cap), loss)
    return loss, low, high, dual


def _seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (the run seed, the step, ...)."""
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p) + 1) % (1 << 63)
    return h


def rollout_warmup(step: int, updates_per_rollout: int, warmup_rollouts: int) -> float:
    """The released learning-rate factor at optimiser step `step` (0-based): verl's constant schedule with a
    linear warm-up, stepped once per rollout batch, so lr = min(1, rollout / warmup_rollouts) with rollout =
    step // updates_per_rollout (the first rollout batch trains at lr 0; 10 rollouts x 16 updates = 160 steps)."""
    if warmup_rollouts <= 0:
        return 1.0
    return min(1.0, (step // updates_per_rollout) / warmup_rollouts)


def filter_groups(task_rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Bool [n_groups]: True for groups (consecutive `num_generations` rewards) whose rewards are not all equal.

    For 0/1 rewards this is the paper's 0 < #correct < G. NaN rewards (unscorable) count as not informative.
    """
    r = task_rewards.view(-1, num_generations)  # [n_groups, G]
    ok = ~torch.isnan(r).any(dim=1)
    spread = torch.nan_to_num(r.max(dim=1).values - r.min(dim=1).values, nan=0.0)
    return ok & (spread > 0)


def _rows(batch: dict, idx: torch.Tensor, n: int) -> dict:
    """The rows `idx` of a TRL generation batch of `n` rows (scalars kept as they are)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.size(0) == n:
            out[k] = v[idx.to(v.device)]
        elif isinstance(v, list) and len(v) == n:
            out[k] = [v[i] for i in idx.tolist()]
        else:
            out[k] = v
    return out


def _pad_to(t: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    extra = width - t.size(1)
    if extra == 0:
        return t
    fill = torch.full((t.size(0), extra, *t.shape[2:]), value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if left else [t, fill], dim=1)


def concat_batches(parts: list[dict], pad_id: int) -> dict:
    """Concatenate TRL generation batches row-wise, re-padding prompts on the left and completions on the right."""
    out = {}
    for k, v0 in parts[0].items():
        vals = [p[k] for p in parts]
        if k in LEFT_PADDED or k in RIGHT_PADDED:
            left = k in LEFT_PADDED
            value = (LEFT_PADDED if left else RIGHT_PADDED)[k]
            value = pad_id if value == "pad" else value
            width = max(v.size(1) for v in vals)
            out[k] = torch.cat([_pad_to(v, width, value, left) for v in vals], dim=0)
        elif isinstance(v0, torch.Tensor) and v0.ndim == 1:
            out[k] = torch.cat(vals, dim=0)
        elif isinstance(v0, torch.Tensor) and v0.ndim == 0:
            out[k] = v0
        elif isinstance(v0, list):
            out[k] = [x for v in vals for x in v]
        else:
            raise NotImplementedError(f"dynamic sampling cannot merge batch field {k!r} (text-only models)")
    return out


REPORTED_ELSEWHERE = ("step", "loss", "grad_norm", "learning_rate")  # the step is the log's own; TRL logs the rest


def dapo_logs(row: dict) -> dict[str, float]:
    """The metrics.jsonl row as report_to scalars: `dapo/<key>`, numbers only (an undefined value, None in the row,
    is left out rather than logged as a fake number)."""
    return {f"dapo/{k}": v for k, v in row.items()
            if k not in REPORTED_ELSEWHERE and isinstance(v, (int, float)) and not isinstance(v, bool)}


class DAPOTrainer(GRPOTrainer):
    """GRPOTrainer with DAPO's loss, dynamic sampling and an entropy token mask (see module docstring)."""

    def __init__(self, *args, dapo: DAPOOptions | None = None, **kwargs):
        self.dapo = dapo or DAPOOptions()
        config = kwargs.get("args")
        if config is not None and config.use_vllm:  # engine in the model's dtype, CPU weight sync: vllm_rollouts.py
            from trainers.vllm_rollouts import harness_engine

            model = kwargs["model"] if "model" in kwargs else args[0]
            with harness_engine(self.dapo.engine_dtype or str(model.dtype).removeprefix("torch.")):
                super().__init__(*args, **kwargs)
        else:
            super().__init__(*args, **kwargs)
        a = self.args
        if a.beta != 0.0:
            raise ValueError("DAPOTrainer: DAPO has no KL term; set beta=0")
        if self.loss_type != "dapo":
            raise ValueError(f"DAPOTrainer: loss_type must be 'dapo', got {self.loss_type!r}")
        # both generators are re-seeded from (seed, global step, ...) where used, so a resumed run draws the same
        self._mask_gen = torch.Generator()
        self._refill_gen = torch.Generator()
        self._last_rewards: torch.Tensor | None = None
        self._step_stats: dict[str, float] = {}
        self._rollout_stats: dict[str, float] = {}
        self._t_last_log: float | None = None

    # ------------------------------------------------------------------ rollouts
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards.detach()  # [B_global, n_funcs], gathered over ranks
        self._last_lengths = [len(ids) for ids in completion_ids_list]  # local, before any truncation masking
        return rewards

    def _refill_batch(self, n_groups: int) -> list[dict]:
        """`n_groups` new prompts drawn uniformly (without replacement per draw), each repeated G times."""
        ds = self.train_dataset
        idx = torch.randperm(len(ds), generator=self._refill_gen)[:n_groups].tolist()
        while len(idx) < n_groups:  # a dataset smaller than one batch
            idx += torch.randperm(len(ds), generator=self._refill_gen)[: n_groups - len(idx)].tolist()
        return [dict(ds[i]) for i in idx for _ in range(self.num_generations)]

    def _local_task_rewards(self, n_local: int) -> torch.Tensor:
        """This rank's task rewards of the last generation call (`n_local` rows on every rank)."""
        r = self._last_rewards[:, self.dapo.task_reward_index]  # [B_global]
        i = self.accelerator.process_index
        return r[i * n_local:(i + 1) * n_local]

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        t0 = time.perf_counter()
        a, o = self.args, self.dapo
        rollout = 1 + self.state.global_step * a.gradient_accumulation_steps // (a.steps_per_generation
                                                                                 * self.num_iterations)
        self._refill_gen.manual_seed(_seed(o.seed, rollout, self.accelerator.process_index))
        G, n = self.num_generations, len(inputs)
        if o.dynamic_sampling and n % G:
            raise ValueError(f"dynamic sampling needs whole prompt groups per rank: the local generation batch "
                             f"({n}) must be a multiple of num_generations ({G})")
        target = n // G
        round_prompts = max(o.generation_prompts or target, target) if o.dynamic_sampling else target
        kept, dropped = [], []
        n_kept = n_groups = gen_batches = 0
        reward_sum = len_sum = 0.0
        count = 0
        diff_sum = diff_n = 0.0  # |log p_trainer - log p_engine| over response tokens (vLLM rollouts only)
        # the first round: TRL's rollout prompts plus, when a round is larger, uniformly drawn extra prompts
        batch = list(inputs) + self._refill_batch(round_prompts - target) if round_prompts > target else inputs
        while True:
            m = len(batch)
            out = super()._generate_and_score_completions(batch)
            out[FILL] = torch.zeros(m, dtype=torch.bool, device=out["advantages"].device)
            gen_batches += 1
            r = self._local_task_rewards(m)  # [m]
            reward_sum += float(torch.nan_to_num(r, nan=0.0).sum())
            len_sum += float(sum(self._last_lengths))
            count += m
            if "sampling_per_token_logps" in out and "old_per_token_logps" in out:
                resp = out["completion_mask"].bool()  # [m, T]
                d = (out["old_per_token_logps"] - out["sampling_per_token_logps"]).abs()[resp]  # [tokens]
                diff_sum += float(torch.nan_to_num(d, nan=0.0).sum())
                diff_n += float((~torch.isnan(d)).sum())
            if not o.dynamic_sampling:
                keep_groups = torch.ones(m // G, dtype=torch.bool)
            else:
                keep_groups = filter_groups(r.cpu(), G)  # [m / G]
            keep_rows = keep_groups.repeat_interleave(G)
            n_groups += m // G
            kept.append(_rows(out, keep_rows.nonzero().squeeze(1), m))
            fill = _rows(out, (~keep_rows).nonzero().squeeze(1), m)
            fill["advantages"] = torch.zeros_like(fill["advantages"])  # fill rows never carry a policy gradient
            fill[FILL] = torch.ones_like(fill[FILL])  # ... nor take a top-k slot or count in a normaliser
            dropped.append(fill)
            n_kept += int(keep_groups.sum())
            need = torch.tensor(float(n_kept < target), device=self.accelerator.device)
            need = float(self.accelerator.reduce(need, reduction="sum")) if self.accelerator.num_processes > 1 \
                else float(need)
            if need == 0 or gen_batches >= o.max_num_gen_batches:
                break
            batch = self._refill_batch(round_prompts)
        parts = kept + dropped[::-1]  # kept groups first (the first `target` kept); fill with the latest dropped
        merged = concat_batches([p for p in parts if p["completion_mask"].size(0) > 0], self._tokenizer.pad_token_id)
        merged = _rows(merged, torch.arange(n), merged["completion_mask"].size(0))
        loss_mask = merged["completion_mask"] * merged.get("tool_mask", 1) * ~merged[FILL].unsqueeze(1)  # [n, T]
        merged["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()  # response tokens, all ranks
        stats = torch.tensor([reward_sum, len_sum, count, n_groups - n_kept if o.dynamic_sampling else 0,
                              n_groups, diff_sum, diff_n], device=self.accelerator.device, dtype=torch.float64)
        if self.accelerator.num_processes > 1:
            stats = self.accelerator.reduce(stats, reduction="sum")
        self._rollout_stats = {
            "rollout": rollout,
            "reward_mean": float(stats[0] / stats[2]),
            "response_len_mean": float(stats[1] / stats[2]),
            "dropped_group_frac": float(stats[3] / stats[4]),
            "gen_batches": gen_batches,
            "rollout_time_s": time.perf_counter() - t0,
        }
        if stats[6] > 0:  # vLLM rollouts: how far the engine's token probabilities are from the trainer's
            self._rollout_stats["sampler_logp_diff"] = float(stats[5] / stats[6])
        return merged

    # ------------------------------------------------------------------ mask pools
    def _prepare_inputs(self, generation_batch):
        inputs = super()._prepare_inputs(generation_batch)
        if self.model.training:
            i = self._step % self.args.steps_per_generation  # this micro-batch's place in the rollout buffer
            accum = self.current_gradient_accumulation_steps
            if i % accum == 0:  # the first micro-step of an optimiser step: plan its whole mini-batch
                self._plan_mini_batch(self._buffered_inputs[i:i + accum])
        return inputs

    def _valid(self, inputs) -> torch.Tensor:
        """Bool [B, T]: the response tokens that may be selected (not padding, tool output or fill rows)."""
        mask = inputs["completion_mask"].bool()
        if "tool_mask" in inputs:
            mask = mask & inputs["tool_mask"].bool()
        if FILL in inputs:
            mask = mask & ~inputs[FILL].unsqueeze(1)
        return mask

    def _select(self, entropy: torch.Tensor, valid: torch.Tensor, pool_index: int):
        """The mask of one pool; the random mask is seeded from (seed, step, pool), the same on every rank."""
        o = self.dapo
        self._mask_gen.manual_seed(_seed(o.seed, self.state.global_step, pool_index))
        sel = select_tokens(entropy, valid, o.mask_mode, o.mask_rho, o.mask_selection, o.mask_scope,
                            generator=self._mask_gen)
        if not math.isnan(sel.threshold):
            self._step_stats["thr_sum"] = self._step_stats.get("thr_sum", 0.0) + sel.threshold
            self._step_stats["thr_n"] = self._step_stats.get("thr_n", 0.0) + 1
        return sel.mask

    def _plan_mini_batch(self, chunks: list[dict]) -> None:
        """Attach a PoolPlan to each forward micro-batch (chunk) of one optimiser step (this rank's mini-batch).

        A pool's share is its rows / the mini-batch rows, fill rows excluded from both. `fixed`: one pool per
        chunk, selected in the micro-step. `token_budget`: the released partition of the mini-batch's rows by the
        token budget; with one chunk its pools are selected in the micro-step, otherwise all are selected here.
        """
        real = [~c[FILL] if FILL in c else torch.ones_like(c["completion_mask"][:, 0], dtype=torch.bool)
                for c in chunks]  # bool [B] per chunk
        n_real = sum(int(r.sum()) for r in real)
        if self.dapo.micro_batching == "fixed":
            for k, (c, r) in enumerate(zip(chunks, real)):
                c[PLAN] = PoolPlan([(k, Pool(None, 0, int(r.sum()) / n_real if n_real else 0.0))], None)
            return
        groups = self._token_budget_groups(chunks, real)  # row lists over the concatenated chunks
        shares = [len(g) / n_real if n_real else 0.0 for g in groups]
        if len(chunks) == 1:
            rows = chunks[0]["completion_mask"].size(0)
            chunks[0][PLAN] = PoolPlan([(m, Pool(None if g == list(range(rows)) else torch.tensor(
                g, dtype=torch.long, device=real[0].device), 0, shares[m])) for m, g in enumerate(groups)], None)
            return
        self._preselect(chunks, groups, shares)

    def _token_budget_groups(self, chunks: list[dict], real: list[torch.Tensor]) -> list[list[int]]:
        """The released token-budget micro-batches of the mini-batch's real rows: their count is the maximum over
        ranks of ceil(tokens / budget) (tokens = prompt + response, padding excluded), at most the rows held."""
        o = self.dapo
        seqlens = torch.cat([c["prompt_mask"].sum(1) + c["completion_mask"].sum(1) for c in chunks]).tolist()
        rows = torch.cat(real).nonzero().squeeze(1).tolist()
        lens = [seqlens[r] for r in rows]
        count = micro_batch_count(lens, o.micro_batch_tokens)
        if self.accelerator.num_processes > 1:
            count = int(self.accelerator.reduce(torch.tensor(count, device=self.accelerator.device), reduction="max"))
        groups = [[rows[j] for j in g] for g in token_budget_micro_batches(lens, min(count, len(rows)))] if rows else []
        if o.mask_scope == "gathered":  # every rank selects the same number of pools (fill rows can leave fewer)
            groups += [[] for _ in range(count - len(groups))]
        return groups

    def _preselect(self, chunks: list[dict], groups: list[list[int]], shares: list[float]) -> None:
        """Pools that span several chunks: select every pool now, from a no-grad entropy pass over all chunks with
        the current weights, and give each chunk its rows of every pool with the pool's selected-token count."""
        entropy = self._entropy_pass(chunks)  # [R, T]
        valid = torch.cat([self._valid(c) for c in chunks])  # [R, T]
        selected = torch.zeros_like(valid)
        n_sel = []
        for m, g in enumerate(groups):
            idx = torch.tensor(g, dtype=torch.long, device=valid.device)
            selected[idx] = self._select(entropy[idx], valid[idx], m)
            n_sel.append(int(selected[idx].sum()))
        lo = 0
        for c in chunks:
            hi = lo + c["completion_mask"].size(0)
            pools = [(m, Pool(torch.tensor([r - lo for r in g if lo <= r < hi], dtype=torch.long,
                                            device=valid.device), n_sel[m], shares[m]))
                     for m, g in enumerate(groups) if any(lo <= r < hi for r in g)]
            c[PLAN] = PoolPlan(pools, selected[lo:hi])
            lo = hi

    def _entropy_pass(self, chunks: list[dict]) -> torch.Tensor:
        """Per-token entropies [R, T] of the mini-batch's chunks under the current weights (no grad), computed
        chunk by chunk as the gradient pass will see them."""
        out = []
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            for c in chunks:
                ids = torch.cat([c["prompt_ids"], c["completion_ids"]], dim=1)  # [B, P+T]
                att = torch.cat([c["prompt_mask"], c["completion_mask"]], dim=1)  # [B, P+T]
                _, ent, _ = self._get_per_token_logps_and_entropies(self.model, ids, att, c["completion_ids"].size(1),
                                                                    compute_entropy=True)
                out.append(ent.float())  # [B, T]
        return torch.cat(out)

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs):
        if "pixel_values" in inputs:
            raise NotImplementedError("DAPOTrainer is text-only; batch field 'pixel_values' is not supported")
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [B, P+T]
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # [B, P+T]
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True)  # [B, T] each
        valid = self._valid(inputs)  # [B, T]
        o = self.dapo
        training = self.model.training
        if training and PLAN not in inputs:
            raise RuntimeError("DAPOTrainer: a training micro-batch without its mask-pool plan (_prepare_inputs "
                               "plans each optimiser step's mini-batch at its first micro-step)")
        plan = inputs[PLAN] if training else PoolPlan([(0, Pool(None, 0, 1.0))], None)  # eval: one pool
        if plan.selected is not None:  # selected before this micro-step (pools spanning micro-batches)
            sel, pools = plan.selected, [p for _, p in plan.pools]
        else:
            sel, pools = torch.zeros_like(valid), []
            for m, p in plan.pools:
                if p.rows is None:
                    sel = self._select(entropies, valid, m)
                else:
                    sel[p.rows] = self._select(entropies[p.rows], valid[p.rows], m)
                pools.append(p._replace(n_selected=int(sel.sum() if p.rows is None else sel[p.rows].sum())))
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old  # [B, T]
        adv = inputs["advantages"]
        adv = adv.unsqueeze(1) if adv.dim() == 1 else adv  # [B, 1]
        per_token, low, high, dual = dapo_token_loss(logps, old, adv, self.epsilon_low, self.epsilon_high,
                                                     o.dual_clip, o.log_ratio_clamp)
        if "importance_sampling_ratio" in inputs:  # TRL's vLLM sampler/trainer correction, when it is on
            per_token = per_token * inputs["importance_sampling_ratio"]
        # response tokens of this rank's share of one optimiser step (TRL's "dapo" normaliser)
        n_resp = inputs["num_items_in_batch"] / self.accelerator.num_processes
        if training:
            n_resp = n_resp * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        loss = aggregate_loss(per_token, sel, o.loss_normalizer, n_resp, pools)
        self._record_step_stats(entropies.detach(), valid, sel, low, high, dual)
        return loss

    def _record_step_stats(self, ent, mask, sel, low, high, dual):
        stats = torch.stack([
            mask.sum(), sel.sum(), (ent * mask).sum(), (ent * sel).sum(),
            (low & sel).sum(), (high & sel).sum(), (dual & sel).sum(),
        ]).double()
        if self.accelerator.num_processes > 1:
            stats = self.accelerator.reduce(stats, reduction="sum")
        names = ("n_tokens", "n_selected", "ent_sum", "ent_sel_sum", "clip_low", "clip_high", "clip_dual")
        for k, v in zip(names, stats.tolist()):
            self._step_stats[k] = self._step_stats.get(k, 0.0) + v

    # ------------------------------------------------------------------ schedule
    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """`warmup_unit="rollout"`: the released warm-up, counted in rollout batches (see `rollout_warmup`)."""
        if self.dapo.warmup_unit == "step" or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        from functools import partial

        from torch.optim.lr_scheduler import LambdaLR

        self.lr_scheduler = LambdaLR(optimizer or self.optimizer, partial(
            rollout_warmup, updates_per_rollout=self.dapo.updates_per_rollout, warmup_rollouts=self.args.warmup_steps))
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # ------------------------------------------------------------------ logging
    def training_step(self, model, inputs, num_items_in_batch):
        if self._t_last_log is None:
            self._t_last_log = time.perf_counter()
        return super().training_step(model, inputs, num_items_in_batch)

    def step_metrics(self, logs: dict) -> dict:
        """The metrics.jsonl row of the optimiser step that just ended (see docs/training.md)."""
        s, now = self._step_stats, time.perf_counter()
        n, k = s.get("n_tokens", 0.0), s.get("n_selected", 0.0)
        nan = float("nan")
        row = {
            "step": self.state.global_step,
            "loss": logs.get("loss"),
            "grad_norm": logs.get("grad_norm"),
            "learning_rate": logs.get("learning_rate"),
            **self._rollout_stats,
            "entropy_mean": s.get("ent_sum", nan) / n if n else nan,
            "entropy_threshold": s["thr_sum"] / s["thr_n"] if s.get("thr_n") else nan,
            "selected_frac": k / n if n else nan,
            "entropy_selected_mean": s.get("ent_sel_sum", nan) / k if k else nan,
            "entropy_unselected_mean": (s["ent_sum"] - s["ent_sel_sum"]) / (n - k) if n > k else nan,
            "clip_frac_low": s.get("clip_low", nan) / k if k else nan,
            "clip_frac_high": s.get("clip_high", nan) / k if k else nan,
            "clip_frac_dual": s.get("clip_dual", nan) / k if k else nan,
            "n_response_tokens": int(n),
            "n_selected_tokens": int(k),
            "step_time_s": now - self._t_last_log if self._t_last_log else nan,
        }
        self._t_last_log = now
        self._step_stats = {}
        return {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in row.items()}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """metrics.jsonl gets the step's row; TRL's report_to (TensorBoard, W&B) gets its numbers too, as `dapo/<key>`
        (TensorBoard shows them as train/dapo/<key>), beside TRL's own metrics."""
        if self.model.training and "loss" in logs and self._step_stats:
            row = self.step_metrics(logs)
            if self.dapo.metrics_path and self.accelerator.is_main_process:
                append_jsonl(Path(self.dapo.metrics_path), row)
            logs = {**logs, **dapo_logs(row)}
        super().log(logs, start_time)
