"""SFT warm start of the tiny Qwen3 model on noisy traces, cached, with a quality gate.

The paper starts RL from a pretrained base model that already solves some problems and whose chain of thought
has a few uncertain "forking" tokens among many confident ones. Here that base is made by supervised training
on synthetic traces that pick the correct item of each round with probability `p_correct` (else the runner-up
or a random wrong item; wrong traces stay internally consistent). The loss covers answer tokens only; every
step draws fresh traces from a seeded generator, so the result is a pure function of the config (on a given
machine and thread count).

The quality gate is exact, not sampled: on held-out problems it computes, by teacher forcing on the correct
answers, the expected success of sampling at T=1 (mean over problems of the product of the correct tokens'
probabilities) and the mean entropy of each token role (fork = the chosen number; fixed = labels, ";" and
<eos>). A warm start fails loudly (`WarmStartError`) if it cannot follow the format (fixed-token entropy too
high), if its forks are not uncertain, or if its success is outside the band where RL has something to learn.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from harness.mini.task import TaskFormat, check_format, make_problems, noisy_trace, write_format
from harness.mini.tokenizer import build_tokenizer

ROLES = ("fixed", "fork", "fixed")  # per answer round: label, number, ";"


class WarmStartError(RuntimeError):
    """The warm-started model fails the quality gate; the message says which check and by how much."""


@dataclass(frozen=True)
class WarmStartConfig:
    seed: int = 0
    format: dict = field(default_factory=dict)  # TaskFormat fields
    p_correct: float = 0.65    # probability that a trace picks the right item of a round
    steps: int = 1000          # optimiser steps, each on `batch_size` fresh traces
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    threads: int = 1           # torch threads; results are reproducible for a fixed value
    gate_problems: int = 256   # held-out problems for the quality gate
    gate_seed: int = 999_999
    gate_success: tuple = (0.12, 0.55)  # allowed expected success at T=1
    gate_max_fixed_entropy: float = 0.05  # nats, mean over label / ";" / <eos> tokens
    gate_min_fork_entropy: float = 0.30   # nats, mean over decision tokens: RL needs something to choose

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "WarmStartConfig":
        cfg = dict(cfg)
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown warm-start keys: {sorted(unknown)}")
        if "gate_success" in cfg:
            cfg["gate_success"] = tuple(cfg["gate_success"])
        cfg["format"] = dict(cfg.get("format") or {})
        return cls(**cfg)

    def fingerprint(self) -> str:
        blob = json.dumps({**asdict(self), "format": TaskFormat.from_config(self.format).to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_model(cfg: WarmStartConfig, vocab_size: int, tok):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return Qwen3ForCausalLM(config)


def encode_batch(tok, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """input_ids [B, P + A] of prompt + answer + <eos> with prompts left-padded to the longest (P), the
    attention mask [B, P + A], and P. Answers of one format all have A tokens (3 per round + <eos>)."""
    prompts = [tok(e["prompt"])["input_ids"] for e in examples]
    answers = [tok(e["answer"])["input_ids"] + [tok.eos_token_id] for e in examples]
    if len({len(a) for a in answers}) != 1:
        raise ValueError("mini task answers of one batch must have equal lengths (same number of rounds)")
    plen = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (plen - len(p)) + p + a for p, a in zip(prompts, answers)])
    mask = torch.tensor([[0] * (plen - len(p)) + [1] * (len(p) + len(a)) for p, a in zip(prompts, answers)])
    return ids, mask, plen


def answer_logits(model, ids: torch.Tensor, mask: torch.Tensor, plen: int) -> torch.Tensor:
    """Logits [B, A, V] predicting the answer tokens (left padding: every answer starts at P)."""
    return model(input_ids=ids, attention_mask=mask).logits[:, plen - 1:-1]


def answer_loss(model, ids: torch.Tensor, mask: torch.Tensor, plen: int) -> torch.Tensor:
    logits = answer_logits(model, ids, mask, plen)  # [B, A, V]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, plen:].reshape(-1))


@torch.no_grad()
def exact_stats(model, tok, fmt: TaskFormat, problems: list[dict]) -> dict:
    """Exact expected success at T=1 (the mean over problems of P(correct answer)) and mean entropy per token
    role, by one teacher-forced forward pass on the correct answers: no sampling noise."""
    was_training = model.training
    model.eval()
    ids, mask, plen = encode_batch(tok, problems)
    logp = torch.log_softmax(answer_logits(model, ids, mask, plen).float(), -1)  # [B, A, V]
    gold_logp = logp.gather(-1, ids[:, plen:, None])[..., 0]  # [B, A]
    ent = -(logp.exp() * logp).sum(-1)  # [B, A]
    roles = list(ROLES) * fmt.rounds + ["fixed"]  # + <eos>
    by_role = {r: ent[:, [i for i, x in enumerate(roles) if x == r]] for r in ("fixed", "fork")}
    model.train(was_training)
    return {"success": gold_logp.sum(-1).exp().mean().item(),
            "fork_correct_prob": gold_logp[:, [i for i, x in enumerate(roles) if x == "fork"]].exp().mean().item(),
            **{f"entropy_{r}": e.mean().item() for r, e in by_role.items()},
            "share_under_0.01": (ent < 0.01).float().mean().item(), "n_problems": len(problems)}


def gate_stats(model, tok, fmt: TaskFormat, n: int, seed: int) -> dict:
    return exact_stats(model, tok, fmt, make_problems(fmt, n, seed))


def check_gate(stats: dict, cfg: WarmStartConfig) -> None:
    lo, hi = cfg.gate_success
    problems = []
    if not lo <= stats["success"] <= hi:
        problems.append(f"expected success {stats['success']:.3f} outside [{lo}, {hi}]")
    if stats["entropy_fixed"] > cfg.gate_max_fixed_entropy:
        problems.append(f"fixed-token entropy {stats['entropy_fixed']:.3f} > {cfg.gate_max_fixed_entropy} nats "
                        "(the model has not learned the answer format)")
    if stats["entropy_fork"] < cfg.gate_min_fork_entropy:
        problems.append(f"fork entropy {stats['entropy_fork']:.3f} < {cfg.gate_min_fork_entropy} nats "
                        "(no decision left for RL)")
    if problems:
        raise WarmStartError("mini warm start failed its quality gate: " + "; ".join(problems))


def train_warm_start(cfg: WarmStartConfig, out_dir: str | Path, log_every: int = 100, verbose: bool = False) -> dict:
    """Train from scratch into `out_dir` (save_pretrained layout + tokenizer + format file); return gate stats."""
    from harness.core.io import atomic_write_json, provenance

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    fmt = TaskFormat.from_config(cfg.format)
    tok = build_tokenizer()
    model = build_model(cfg, len(tok), tok)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    rng = random.Random(f"mini-warmstart-{cfg.seed}")
    t0, log = time.time(), []
    model.train()
    for step in range(cfg.steps):
        ids, mask, plen = encode_batch(tok, [noisy_trace(rng, fmt, cfg.p_correct) for _ in range(cfg.batch_size)])
        loss = answer_loss(model, ids, mask, plen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            probe = gate_stats(model, tok, fmt, 64, cfg.gate_seed)
            log.append({"step": step + 1, "loss": loss.item(), "time_s": round(time.time() - t0, 2),
                        **{k: round(v, 4) for k, v in probe.items() if k != "n_problems"}})
            if verbose:
                print(json.dumps(log[-1]), flush=True)
    stats = {**gate_stats(model, tok, fmt, cfg.gate_problems, cfg.gate_seed), "train_time_s": time.time() - t0}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    write_format(out, fmt)
    atomic_write_json(out / "warmstart.json", provenance(asdict(cfg), gate=stats, log=log,
                                                         fingerprint=cfg.fingerprint(), format=fmt.to_dict()))
    return stats


def ensure_warm_start(model_cfg: Mapping[str, Any], verbose: bool = False) -> Path:
    """The warm-started model at `model_cfg["path"]` (relative: to the current directory), trained now unless a
    passing one with the same recipe (fingerprint of `model_cfg["warmstart"]`) is already there. This is the
    model config's `prepare` hook (trainers.train.resolve_model_path). Raises WarmStartError if the gate fails;
    the failed model is kept beside the path (`<path>.failed`) for inspection and never used. A file lock
    makes concurrent callers (two cells starting at once) train it only once."""
    import fcntl

    if not isinstance(model_cfg, dict):
        from omegaconf import OmegaConf

        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    cfg = WarmStartConfig.from_config(model_cfg["warmstart"])
    path = Path(model_cfg["path"]).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(cfg, path, verbose)


def _ensure_locked(cfg: WarmStartConfig, path: Path, verbose: bool) -> Path:
    import shutil

    record = path / "warmstart.json"
    if record.exists():
        old = json.loads(record.read_text())
        if old.get("fingerprint") == cfg.fingerprint() and old.get("gate_passed"):
            check_format(path, TaskFormat.from_config(cfg.format))
            return path
    tmp, failed = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".failed")
    shutil.rmtree(tmp, ignore_errors=True)
    stats = train_warm_start(cfg, tmp, verbose=verbose)
    try:
        check_gate(stats, cfg)
    except WarmStartError:
        shutil.rmtree(failed, ignore_errors=True)
        tmp.rename(failed)
        raise
    from harness.core.io import atomic_write_json

    atomic_write_json(tmp / "warmstart.json", {**json.loads((tmp / "warmstart.json").read_text()), "gate_passed": True})
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path
