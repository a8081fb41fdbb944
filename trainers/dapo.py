"""DAPO with an entropy token mask, as a narrow subclass of TRL's GRPOTrainer.

What is overridden (everything else, including the training loop, generation and checkpointing, is TRL's):
- `_compute_loss`: the DAPO token-level clipped loss (clip-higher eps_low/eps_high, optional dual-clip c), no KL,
  no entropy bonus, restricted to the tokens chosen by `trainers.masks.select_tokens` and normalised by the
  chosen normaliser. The pure pieces are `dapo_token_loss` (here) and `masks.aggregate_loss`.
- `_generate_and_score_completions`: dynamic sampling (DAPO section 3.2), which TRL lacks: prompt groups whose
  task rewards are all equal are dropped and new prompts are generated (up to `max_num_gen_batches` generation
  batches) until the batch is full. `filter_groups` is the pure decision.
- `_calculate_rewards`: only records the per-function rewards so the filter can read the task reward.
- `log`: writes one line per optimiser step to `metrics.jsonl` and passes the same numbers to TRL's `report_to`
  (TensorBoard, W&B) as `dapo/<key>`.

Deviations, stated plainly:
- If the batch is still not full after `max_num_gen_batches` generation batches, it is filled with the most
  recently dropped groups with their advantage set to 0 (so no policy gradient, not even from the overlong
  penalty; they still count as response tokens under the "all" normaliser). The released code raises an error
  instead; `gen_batches` and `dropped_group_frac` in metrics.jsonl show when this happens.
- Refill prompts are drawn uniformly from the training set with a seeded generator (per rank), not from the
  epoch's sampler, so a refill can repeat a prompt of the current epoch.
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

from harness.core.io import append_jsonl
from trainers.masks import aggregate_loss, check_mask_args, check_normalizer, select_tokens

LEFT_PADDED = {"prompt_ids": "pad", "prompt_mask": 0}
RIGHT_PADDED = {"completion_ids": "pad", "completion_mask": 0, "old_per_token_logps": 0.0,
                "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0, "tool_mask": 1,
                "importance_sampling_ratio": 0.0}


@dataclass
class DAPOOptions:
    """The DAPO and token-mask options that TRL's GRPOConfig does not have (see docs/training.md)."""
    mask_mode: str = "all"  # all | top | bottom | random (paper section 4)
    mask_rho: float = 1.0  # fraction of response tokens kept, in (0, 1]
    mask_selection: str = "topk"  # topk (released code) | quantile (TRL)
    mask_scope: str = "local"  # local: per micro-batch and rank (released code) | gathered over ranks (TRL)
    loss_normalizer: str = "selected"  # selected (released code) | all (Eq. 6, TRL)
    dual_clip: float | None = None  # dual-clip constant c (released code: 10.0); None = off
    dynamic_sampling: bool = True  # drop all-equal-reward groups and refill (DAPO section 3.2)
    max_num_gen_batches: int = 10  # generation batches per rollout batch at most (DAPO recipe: 10)
    task_reward_index: int = 0  # which reward function decides "all equal" for dynamic sampling
    metrics_path: str | None = None  # metrics.jsonl to append to (main process only)
    seed: int = 0  # seeds refill sampling and the random mask

    def __post_init__(self):
        check_mask_args(self.mask_mode, self.mask_rho, self.mask_selection, self.mask_scope)
        check_normalizer(self.loss_normalizer)
        if self.dual_clip is not None and not self.dual_clip > 1.0:
            raise ValueError(f"dual_clip must be > 1 (released code: 10.0) or null, got {self.dual_clip}")
        if not isinstance(self.max_num_gen_batches, int) or self.max_num_gen_batches < 1:
            raise ValueError(f"max_num_gen_batches must be a positive integer, got {self.max_num_gen_batches}")


def dapo_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, eps_low: float,
                    eps_high: float, dual_clip: float | None = None):
    """Per-token DAPO loss [B, T] and the clip indicators.

    logp, old_logp: [B, T]; adv: [B, 1] (or [B, T]). ratio r = exp(logp - old_logp).
    loss = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A); with dual-clip c and A < 0 the loss is capped at -c A.
    Returns (loss, low_clipped, high_clipped, dual_clipped), the indicators as bool [B, T].
    """
    ratio = torch.exp(logp - old_logp)  # [B, T]
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
            with harness_engine(str(model.dtype).removeprefix("torch.")):
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
        self._micro = 0  # micro-batches since the last optimiser step
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
        r = self._last_rewards[:, self.dapo.task_reward_index]  # [B_global]
        i = self.accelerator.process_index
        return r[i * n_local:(i + 1) * n_local]

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        t0 = time.perf_counter()
        a = self.args
        rollout = 1 + self.state.global_step * a.gradient_accumulation_steps // (a.steps_per_generation
                                                                                 * self.num_iterations)
        self._refill_gen.manual_seed(_seed(self.dapo.seed, rollout, self.accelerator.process_index))
        G, n = self.num_generations, len(inputs)
        if self.dapo.dynamic_sampling and n % G:
            raise ValueError(f"dynamic sampling needs whole prompt groups per rank: the local generation batch "
                             f"({n}) must be a multiple of num_generations ({G})")
        target = n // G
        kept, dropped = [], []
        n_kept = n_groups = gen_batches = 0
        reward_sum = len_sum = 0.0
        count = 0
        diff_sum = diff_n = 0.0  # |log p_trainer - log p_engine| over response tokens (vLLM rollouts only)
        batch = inputs
        while True:
            out = super()._generate_and_score_completions(batch)
            gen_batches += 1
            r = self._local_task_rewards(n)  # [n]
            reward_sum += float(torch.nan_to_num(r, nan=0.0).sum())
            len_sum += float(sum(self._last_lengths))
            count += n
            if "sampling_per_token_logps" in out and "old_per_token_logps" in out:
                m = out["completion_mask"].bool()  # [n, T]
                d = (out["old_per_token_logps"] - out["sampling_per_token_logps"]).abs()[m]  # [tokens]
                diff_sum += float(torch.nan_to_num(d, nan=0.0).sum())
                diff_n += float((~torch.isnan(d)).sum())
            if not self.dapo.dynamic_sampling:
                keep_groups = torch.ones(target, dtype=torch.bool)
            else:
                keep_groups = filter_groups(r.cpu(), G)  # [n / G]
            keep_rows = keep_groups.repeat_interleave(G)
            n_groups += target
            kept.append(_rows(out, keep_rows.nonzero().squeeze(1), n))
            fill = _rows(out, (~keep_rows).nonzero().squeeze(1), n)
            fill["advantages"] = torch.zeros_like(fill["advantages"])  # fill rows never carry a policy gradient
            dropped.append(fill)
            n_kept += int(keep_groups.sum())
            need = torch.tensor(float(n_kept < target), device=self.accelerator.device)
            need = float(self.accelerator.reduce(need, reduction="sum")) if self.accelerator.num_processes > 1 \
                else float(need)
            if need == 0 or gen_batches >= self.dapo.max_num_gen_batches:
                break
            batch = self._refill_batch(target)
        parts = kept + dropped[::-1]  # kept groups first; fill with the most recently dropped ones
        merged = concat_batches([p for p in parts if p["completion_mask"].size(0) > 0], self._tokenizer.pad_token_id)
        first = torch.arange(n)
        merged = _rows(merged, first, merged["completion_mask"].size(0))
        loss_mask = merged["completion_mask"] * merged.get("tool_mask", 1)  # [n, T]
        merged["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()  # response tokens, all ranks
        stats = torch.tensor([reward_sum, len_sum, count, n_groups - n_kept if self.dapo.dynamic_sampling else 0,
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
        mask = completion_mask.bool()  # [B, T]
        if "tool_mask" in inputs:
            mask = mask & inputs["tool_mask"].bool()
        o = self.dapo
        self._mask_gen.manual_seed(_seed(o.seed, self.state.global_step, self._micro))  # same on every rank
        self._micro += 1
        sel = select_tokens(entropies, mask, o.mask_mode, o.mask_rho, o.mask_selection, o.mask_scope,
                            generator=self._mask_gen)
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old  # [B, T]
        adv = inputs["advantages"]
        adv = adv.unsqueeze(1) if adv.dim() == 1 else adv  # [B, 1]
        per_token, low, high, dual = dapo_token_loss(logps, old, adv, self.epsilon_low, self.epsilon_high,
                                                     o.dual_clip)
        if "importance_sampling_ratio" in inputs:  # vLLM sampler/trainer mismatch correction, as TRL
            per_token = per_token * inputs["importance_sampling_ratio"]
        mode = "train" if self.model.training else "eval"
        accum = self.current_gradient_accumulation_steps if mode == "train" else 1
        # response tokens of this rank's share of one optimiser step (TRL's "dapo" normaliser)
        n_resp = inputs["num_items_in_batch"] / self.accelerator.num_processes
        if mode == "train":
            n_resp = n_resp * accum / self.args.steps_per_generation
        loss = aggregate_loss(per_token, sel.mask, o.loss_normalizer, n_resp, accum)
        self._record_step_stats(entropies.detach(), mask, sel, low, high, dual, loss.detach() * accum)
        return loss

    def _record_step_stats(self, ent, mask, sel, low, high, dual, loss):
        s = sel.mask
        stats = torch.stack([
            mask.sum(), s.sum(), (ent * mask).sum(), (ent * s).sum(),
            (low & s).sum(), (high & s).sum(), (dual & s).sum(),
        ]).double()
        if self.accelerator.num_processes > 1:
            stats = self.accelerator.reduce(stats, reduction="sum")
        names = ("n_tokens", "n_selected", "ent_sum", "ent_sel_sum", "clip_low", "clip_high", "clip_dual")
        for k, v in zip(names, stats.tolist()):
            self._step_stats[k] = self._step_stats.get(k, 0.0) + v
        if not math.isnan(sel.threshold):
            self._step_stats["thr_sum"] = self._step_stats.get("thr_sum", 0.0) + sel.threshold
            self._step_stats["thr_n"] = self._step_stats.get("thr_n", 0.0) + 1

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
        self._micro = 0
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
