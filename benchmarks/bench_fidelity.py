"""How far the paper preset's update is from the released one, where it cannot be exact; and what precision does.

    python benchmarks/bench_fidelity.py selection [--seeds 3]      # modelled rollouts, no model
    python benchmarks/bench_fidelity.py master [--hidden 256 --layers 4]
    python benchmarks/bench_fidelity.py prepass [--repeats 10]

`selection`: a modelled rollout batch of the paper's size (512 prompts x 16 responses; response lengths
lognormal, median 5,000 tokens, sigma 0.6, capped at 20,480; prompts 60-300 tokens; token entropies: half
near-deterministic (< 0.01 nats), the rest lognormal with 40% above 0.672 nats, so 20% overall as in the paper's
Fig. 2, times a per-response factor exp(N(0, 0.3^2))). On the same batch it forms the mask pools and per-token
gradient weights of
  - `released`: 128 GPUs = 16 data-parallel ranks x Ulysses SP 8; `balance_batch` (Karmarkar-Karp equal-size
    partitions over the 128 GPUs by prompt + response length), each rank slicing its 512 rows into 16
    mini-batches of 32 in order; per mini-batch, `ceil(tokens / 180,224)` token-budget pools (maximum over ranks),
    Karmarkar-Karp balanced; top-20% per pool; weight = pool rows / mini-batch rows / selected in the pool;
  - `ours`: TRL's layout (each rank holds whole prompt groups, shuffles its rows uniformly, slices mini-batches),
    with `micro_batching=fixed` (pools of `micro_batch_size` = 4 rows, weight 1 / accumulation; the old paper
    preset) or `token_budget` (this preset: the released pools inside each mini-batch), on 8 or 16 processes.
It prints, against `released`: the Jaccard overlap of the selected tokens, the spread (coefficient of variation)
of the per-token gradient weights of the selected tokens, and the share of the gradient weight on the longest
quarter of the responses. Gradient weights are in units of one optimiser step (each step's weights sum to 1).

`master`: one DAPO step at lr 1e-6 with bf16 compute on a random Qwen3 (CPU), weights in float32 (master) or in
bf16: the fraction of weights that changed and the mean |update| against the float32 master run.

`prepass`: the cost of the extra no-grad entropy pass `token_budget` needs when a pool spans several forward
micro-batches: seconds per optimiser step (forward + backward of one mini-batch) with `fixed` and with
`token_budget` on a random Qwen3 on CPU, interleaved.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time


# ------------------------------------------------------------------ selection: modelled rollouts
def _kk_equal(lengths, k):
    """Karmarkar-Karp into k partitions of equal size (verl `balance_batch`, equal_size=True), our own code."""
    import heapq

    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))

    class State:
        def __init__(self, items):
            self.parts = sorted(([lengths[i], [i]] for i in items), key=lambda p: (p[0], len(p[1]), p[1]),
                                reverse=True)

        def spread(self):
            return self.parts[0][0] - self.parts[-1][0]

        def __lt__(self, other):
            return self.spread() > other.spread()

    heap = [State(order[o:o + k]) for o in range(0, len(order), k)]
    heapq.heapify(heap)
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        for i in range(k):
            a.parts[i][0] += b.parts[k - 1 - i][0]
            a.parts[i][1] += b.parts[k - 1 - i][1]
        a.parts.sort(key=lambda p: (p[0], len(p[1])), reverse=True)
        heapq.heappush(heap, a)
    return [sorted(p[1]) for p in heap[0].parts]


def _rollout(seed: int, prompts=512, G=16):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = prompts * G
    resp = np.clip(rng.lognormal(np.log(5000), 0.6, n), 50, 20480).astype(np.int64)
    prompt = np.repeat(rng.integers(60, 301, prompts), G)
    offsets = np.concatenate([[0], np.cumsum(resp)])
    N = int(offsets[-1])
    low = rng.random(N) < 0.5
    ent = np.where(low, rng.random(N) * 0.01, rng.lognormal(np.log(0.672) - 0.2533 * 0.9, 0.9, N))
    ent *= np.repeat(np.exp(rng.normal(0, 0.3, n)), resp)
    return resp, prompt, offsets, ent.astype(np.float32)


def _weights(rows_by_step, resp, prompt, offsets, ent, budget, rho, dp, fixed_rows=None, sync=True):
    """Per-token gradient weight [N] (0 = not selected) for mini-batches given per step as one row list per
    rank; pools by token budget (released partition) or consecutive chunks of `fixed_rows`."""
    import numpy as np

    from trainers.microbatch import micro_batch_count, token_budget_micro_batches

    w = np.zeros(ent.shape[0], dtype=np.float32)
    for ranks in rows_by_step:
        seq = [[int(prompt[r] + resp[r]) for r in rows] for rows in ranks]
        count = max(micro_batch_count(s, budget) for s in seq) if sync else None
        for rows, s in zip(ranks, seq):
            if fixed_rows:
                pools = [list(range(i, min(i + fixed_rows, len(rows)))) for i in range(0, len(rows), fixed_rows)]
            else:
                pools = token_budget_micro_batches(s, min(count, len(rows)))
            for pool in pools:
                idx = np.concatenate([np.arange(offsets[rows[j]], offsets[rows[j] + 1]) for j in pool])
                k = max(1, int(np.ceil(rho * idx.size - 1e-9)))
                top = idx[np.argpartition(-ent[idx], k - 1)[:k]]
                w[top] = len(pool) / len(rows) / k / dp
    return w


def _layouts(resp, prompt, world, G=16, prompts=512, update_prompts=32, seed=0):
    """Mini-batches per optimiser step, each a list of row lists (one per rank). `world="released"` is the released
    layout; `"released-reordered"` the same with the prompts in another random order (the released code's own
    run-to-run variation in which rows share a pool)."""
    import numpy as np

    n = prompts * G
    steps = prompts // update_prompts
    if world.startswith("released") if isinstance(world, str) else False:
        gpus, dp = 128, 16
        rows = np.arange(n)
        if world == "released-reordered":  # another prompt order, groups kept together
            rows = (np.random.default_rng(seed + 7).permutation(prompts)[:, None] * G + np.arange(G)).ravel()
        parts = _kk_equal([int(prompt[r] + resp[r]) for r in rows], gpus)
        order = [int(rows[i]) for p in parts for i in p]
        per_rank = n // dp
        rank_rows = [order[d * per_rank:(d + 1) * per_rank] for d in range(dp)]
        mb = per_rank // steps
        return [[rr[s * mb:(s + 1) * mb] for rr in rank_rows] for s in range(steps)], dp
    rng = np.random.default_rng(seed + 1)
    per_rank = n // world
    rank_rows = [list(rng.permutation(np.arange(d * per_rank, (d + 1) * per_rank))) for d in range(world)]
    mb = per_rank // steps
    return [[rr[s * mb:(s + 1) * mb] for rr in rank_rows] for s in range(steps)], world


def selection(a) -> None:
    import numpy as np

    budget, rho = 180224, 0.2
    configs = [("released (16 DP ranks, balance_batch, token budget)", "released", None),
               ("released, the prompts in another random order", "released-reordered", None),
               ("ours `fixed`, micro_batch_size 4, 8 processes (old paper preset)", 8, 4),
               ("ours `fixed`, micro_batch_size 4, 16 processes", 16, 4),
               ("ours `token_budget` 180,224, 8 processes (paper preset)", 8, None),
               ("ours `token_budget` 180,224, 16 processes (paper preset)", 16, None),
               ("ours `token_budget` 180,224, 32 processes (paper grid, 14B)", 32, None),
               ("ours `token_budget` 180,224, 64 processes (paper grid, 32B)", 64, None)]
    results = {name: [] for name, _, _ in configs}
    for seed in range(a.seeds):
        resp, prompt, offsets, ent = _rollout(seed)
        long_rows = np.argsort(resp)[-len(resp) // 4:]
        long_tok = np.zeros(ent.shape[0], dtype=bool)
        for r in long_rows:
            long_tok[offsets[r]:offsets[r + 1]] = True
        ref = None
        for name, world, fixed in configs:
            steps, dp = _layouts(resp, prompt, world, seed=seed)
            w = _weights(steps, resp, prompt, offsets, ent, budget, rho, dp, fixed_rows=fixed)
            sel = w > 0
            ref = (sel, w) if ref is None else ref
            jac = float((sel & ref[0]).sum() / (sel | ref[0]).sum())
            cv = float(w[sel].std() / w[sel].mean())
            long_share = float(w[long_tok].sum() / w.sum())
            pools = sum(len(r) for r in steps[0])
            results[name].append((jac, cv, long_share))
            print(f"seed {seed} {name}: Jaccard {jac:.3f}  CV {cv:.3f}  longest-quarter share {long_share:.3f}",
                  file=sys.stderr)
    print("| layout | Jaccard vs released | CV of per-token weight | weight on the longest 25% of responses |")
    print("| --- | --- | --- | --- |")
    for name, vals in results.items():
        m = [statistics.mean(v[i] for v in vals) for i in range(3)]
        print(f"| {name} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.1%} |")


# ------------------------------------------------------------------ master weights
def master(a) -> None:
    import tempfile

    import torch
    from safetensors.torch import load_file

    from harness.core.config import load_config
    from trainers.train import train

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fp32 in (True, False):
            out = f"{tmp}/{fp32}"
            cfg = load_config("train", [
                f"out={out}", "model=tiny", f"model.tiny.hidden_size={a.hidden}", f"model.tiny.num_layers={a.layers}",
                f"model.tiny.head_dim={a.hidden // 4}", "model.tiny.num_heads=4", "model.tiny.num_kv_heads=2",
                f"model.tiny.intermediate_size={3 * a.hidden}", "model.dtype=bfloat16", "trainer.bf16=true",
                f"trainer.fp32_master_weights={str(fp32).lower()}", "trainer.learning_rate=1e-6",
                "trainer.max_steps=1", "trainer.max_completion_length=16", "trainer.overlong_buffer=0",
                "data.reward=trainers.rewards:digit_fraction_reward"])
            train(cfg)
            before = load_file(f"{out}/base_model/model.safetensors")
            after = load_file(f"{out}/final/model.safetensors")
            res[fp32] = {k: after[k].float() - before[k].to(after[k].dtype).float() for k in before}
    total = sum(v.numel() for v in res[True].values())
    print("| weights | changed | mean abs update | vs fp32 master |")
    print("| --- | --- | --- | --- |")
    ref = sum(float(v.abs().sum()) for v in res[True].values()) / total
    for fp32 in (True, False):
        changed = sum(int((v != 0).sum()) for v in res[fp32].values()) / total
        mean = sum(float(v.abs().sum()) for v in res[fp32].values()) / total
        print(f"| {'float32 master' if fp32 else 'bf16'} | {changed:.1%} | {mean:.3g} | {ref / max(mean, 1e-30):.1f}x "
              f"smaller |" if not fp32 else f"| float32 master | {changed:.1%} | {mean:.3g} | 1 |")
    print(f"({total:,} weights, hidden {a.hidden}, {a.layers} layers, one step, lr 1e-6, bf16 compute on CPU)")


# ------------------------------------------------------------------ the extra entropy pass
def prepass(a) -> None:
    import tempfile

    import torch
    from trl.trainer.utils import split_tensor_dict

    from bench_step import synthetic_batch  # the same fixed micro-batch as the CPU step benchmark
    from harness.core.config import load_config
    from trainers.train import make_trainer

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("train", [f"out={tmp}/run", "model=tiny", f"model.tiny.hidden_size={a.hidden}",
                                    f"model.tiny.num_layers={a.layers}", f"model.tiny.head_dim={a.hidden // 4}",
                                    "model.tiny.num_heads=4", "model.tiny.num_kv_heads=2",
                                    f"model.tiny.intermediate_size={3 * a.hidden}", "variant=top20"])
        trainer = make_trainer(cfg)
        trainer.model.train()
        batch = synthetic_batch(trainer.processing_class.vocab_size, a.rows, a.prompt_len, a.completion_len, "cpu")
        chunks = split_tensor_dict(batch, a.rows // a.micro)
        trainer.current_gradient_accumulation_steps = len(chunks)
        times = {"fixed": [], "token_budget": []}
        budget = (a.prompt_len + a.completion_len) * a.rows // 2  # two pools, each spanning several micro-batches
        for _ in range(a.repeats):
            for mode in times:
                trainer.dapo.micro_batching, trainer.dapo.micro_batch_tokens = mode, budget
                t = time.perf_counter()
                trainer._plan_mini_batch(chunks)
                for c in chunks:
                    trainer.compute_loss(trainer.model, c).backward()
                times[mode].append(time.perf_counter() - t)
                trainer.model.zero_grad(set_to_none=True)
    f, tb = statistics.median(times["fixed"]), statistics.median(times["token_budget"])
    print(f"| mini-batch | fixed: median s | token_budget: median s | extra |")
    print("| --- | --- | --- | --- |")
    print(f"| {a.rows} rows x ({a.prompt_len} + {a.completion_len}) tokens, micro-batches of {a.micro}, hidden "
          f"{a.hidden}, {a.layers} layers | {f:.3f} | {tb:.3f} | {tb / f - 1:+.0%} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["selection", "master", "prepass"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--completion-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    {"selection": selection, "master": master, "prepass": prepass}[a.part](a)


if __name__ == "__main__":
    main()
