"""Masking overhead in the training step: `top20` vs `full` on one random Qwen3 model, in one process.

    python benchmarks/bench_step.py [--hidden 16 --layers 2 --batch 8 --prompt-len 32 --completion-len 32]
                                    [--repeats 20] [--threads 2] [--variants full top20 ...]

One DAPOTrainer is built (trainers.train.make_trainer, model=tiny with the given sizes); a fixed synthetic
micro-batch (random prompt/completion ids, 10% of completion positions padded, random advantages) is then run
through the trainer's loss (`_compute_loss`: forward with entropies, token mask, DAPO loss) and backward,
switching the mask between variants round-robin, so load from other jobs hits every variant alike. Generation is
not timed (it does not depend on the mask). Reported: median and best seconds per micro-batch and the overhead
of each variant against `full`.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

VARIANTS = {"full": ("all", 1.0), "top10": ("top", 0.1), "top20": ("top", 0.2), "top50": ("top", 0.5),
            "bottom80": ("bottom", 0.8), "random20": ("random", 0.2)}


def synthetic_batch(vocab: int, B: int, P: int, T: int, device) -> dict:
    """A fixed micro-batch: random prompt/completion ids, ~10% of completion positions padded, random advantages."""
    import torch

    g = torch.Generator().manual_seed(0)
    completion_mask = torch.ones(B, T, dtype=torch.long)  # [B, T]
    lengths = torch.randint(int(T * 0.8), T + 1, (B,), generator=g)
    completion_mask[torch.arange(T)[None, :] >= lengths[:, None]] = 0
    batch = {
        "prompt_ids": torch.randint(4, vocab, (B, P), generator=g),
        "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": torch.randint(4, vocab, (B, T), generator=g),
        "completion_mask": completion_mask,
        "advantages": torch.randn(B, generator=g),
        "num_items_in_batch": completion_mask.sum(),
    }
    return {k: v.to(device) for k, v in batch.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--completion-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--selection", default="topk")
    ap.add_argument("--variants", nargs="+", default=["full", "top20"])
    a = ap.parse_args()

    import torch

    from harness.core.config import load_config
    from trainers.train import make_trainer

    torch.set_num_threads(a.threads)
    out = tempfile.mkdtemp(prefix="bench_step_")
    heads = max(1, a.hidden // 64) if a.hidden >= 64 else 2
    cfg = load_config("train", [
        f"out={out}", "data=local", "data.path=../shared/data/math/math500.jsonl", "data.limit=8",
        f"model.tiny.hidden_size={a.hidden}", f"model.tiny.num_layers={a.layers}",
        f"model.tiny.num_heads={heads}", f"model.tiny.num_kv_heads={max(1, heads // 2)}",
        f"model.tiny.head_dim={max(8, a.hidden // heads)}", f"model.tiny.intermediate_size={3 * a.hidden}",
        f"trainer.mask_selection={a.selection}", f"trainer.max_completion_length={a.completion_len}"])
    trainer = make_trainer(cfg)
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by train() otherwise
    batch = synthetic_batch(model.config.vocab_size, a.batch, a.prompt_len, a.completion_len, "cpu")
    trainer._plan_mini_batch([batch])  # the batch is one whole mini-batch: one mask pool
    times = {v: [] for v in a.variants}
    for i in range(a.repeats + 2):
        for v in a.variants:
            trainer.dapo.mask_mode, trainer.dapo.mask_rho = VARIANTS[v]
            t = time.perf_counter()
            loss = trainer._compute_loss(model, batch)
            loss.backward()
            dt = time.perf_counter() - t
            model.zero_grad(set_to_none=True)
            if i >= 2:  # two warm-up rounds
                times[v].append(dt)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: hidden {a.hidden}, layers {a.layers}, {n_params:,} parameters; micro-batch {a.batch} x "
          f"(prompt {a.prompt_len} + completion {a.completion_len}) tokens; selection {a.selection}; threads {a.threads}; "
          f"{a.repeats} rounds")
    ref = statistics.median(times[a.variants[0]])
    print(f"{'variant':<10}{'median s':>10}{'best s':>10}{'vs ' + a.variants[0]:>12}")
    for v in a.variants:
        med = statistics.median(times[v])
        print(f"{v:<10}{med:>10.4f}{min(times[v]):>10.4f}{(med / ref - 1) * 100:>+11.1f}%")


if __name__ == "__main__":
    main()
