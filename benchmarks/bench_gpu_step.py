"""GPU step cost of the entropy mask at real model sizes: bf16 time and peak memory per micro-batch, on one GPU.

    python3 benchmarks/bench_gpu_step.py [--out FILE] [--models qwen3-0.6b qwen3-1.7b] [--lengths 4096 8192]
                                         [--batch 2] [--prompt-len 512] [--repeats 5] [--warmup 2]
                                         [--variants full top20 top20_quantile] [--max-seconds 300]
    python3 benchmarks/bench_gpu_step.py --cpu-smoke --out /tmp/smoke.json     # the same code path, tiny, on CPU

docs/benchmarks/gpu.md says how a session with a GPU runs it (what must be carried) and holds the results.

For each model size (randomly initialised Qwen3ForCausalLM from a hand-built `Qwen3Config` with the published
Qwen3-0.6B / Qwen3-1.7B sizes; no hub access) one DAPOTrainer is built the way `trainers.train.make_trainer`
builds it (`validate` -> `grpo_args` -> `DAPOTrainer`, bf16, gradient checkpointing), except that the model is
built directly on the GPU in bf16 instead of being loaded from a folder: writing and re-reading GiBs of random
weights would spend device time on nothing. For each response length a fixed synthetic micro-batch (as
benchmarks/bench_step.py: random ids, about 10% of response positions padded, random advantages) is run through
the trainer's own loss (`_compute_loss`: forward with TRL's fused LM head computing log-probs and entropies,
`trainers.masks.select_tokens`, DAPO loss) and backward, switching the mask between variants round-robin.
Per variant: median / min seconds (torch.cuda.synchronize around forward+backward), and peak
torch.cuda.max_memory_allocated (stats reset before every step; gradients are freed after each step).

Also, per (model, length), with the same number of response tokens N = batch x length:
- `head_logp_s` / `head_logp_entropy_s`: TRL's chunked fused LM head (the kernel `_compute_loss` goes through)
  forward+backward on random hidden states, computing log-probs only / log-probs and entropy; the difference is
  what the entropy costs inside the step (TRL computes it for every variant, `full` included).
- `entropy_from_logits_s`: TRL's standalone `entropy_from_logits` on materialised bf16 logits [N, vocab]
  (forward only), for scale; skipped if the logits would not fit in half the free memory.
- `select_<selection>_s`: `select_tokens(mode="top", rho=0.2)` alone on float32 entropies [batch, length].

The run stops starting new work once --max-seconds have passed (it finishes the step in flight) and still writes
what it has; the JSON is rewritten after every (model, length), so a killed run leaves its finished parts. A size
whose rough memory estimate exceeds the free GPU memory is skipped with a reason; an out-of-memory error is
recorded and the run goes on with the next size.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Published Qwen3 sizes (hub config.json of Qwen/Qwen3-0.6B and Qwen/Qwen3-1.7B); vocab 151,936, tied embeddings.
QWEN3_COMMON = dict(vocab_size=151936, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                    head_dim=128, max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                    tie_word_embeddings=True)
MODELS = {
    "qwen3-0.6b": dict(QWEN3_COMMON, hidden_size=1024, intermediate_size=3072),
    "qwen3-1.7b": dict(QWEN3_COMMON, hidden_size=2048, intermediate_size=6144),
    "smoke": dict(vocab_size=1000, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                  max_position_embeddings=512, hidden_size=64, intermediate_size=192, tie_word_embeddings=True),
}
# variant -> (mask mode, rho, selection)
VARIANTS = {"full": ("all", 1.0, "topk"), "top20": ("top", 0.2, "topk"), "top20_quantile": ("top", 0.2, "quantile"),
            "bottom80": ("bottom", 0.8, "topk"), "random20": ("random", 0.2, "topk")}
GIB = 1 << 30
# Pure-Python packages the harness needs that the GPU machine's image lacks (docs/benchmarks/gpu.md); `--pack`
# copies them from this environment into .whl/py, multiprocess as its Python 3.12 wheel (it is per-version).
PACK_DISTS = ("trl", "datasets", "dill", "hydra-core", "omegaconf", "antlr4-python3-runtime")
PACK_WHEELS = ("multiprocess",)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="JSON results (default: $OUT/gpu_step.json, else the temp dir)")
    ap.add_argument("--models", nargs="+", default=["qwen3-0.6b", "qwen3-1.7b"], choices=sorted(MODELS))
    ap.add_argument("--lengths", nargs="+", type=int, default=[4096, 8192], help="response tokens per sequence")
    ap.add_argument("--batch", type=int, default=2, help="sequences per micro-batch")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per variant (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--variants", nargs="+", default=["full", "top20", "top20_quantile"], choices=sorted(VARIANTS))
    ap.add_argument("--max-seconds", type=float, default=300.0, help="start no new work after this (wall clock)")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation of the model (sdpa | eager | ...)")
    ap.add_argument("--no-micro", action="store_true", help="skip the entropy / mask-selection micro-benchmarks")
    ap.add_argument("--pack", action="store_true",
                    help="only copy the packages the GPU machine lacks into .whl/py (run here, then carry .whl)")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny model (hidden 64, 2 layers, vocab 1000, 64 response tokens) on the CPU: checks the path")
    a = ap.parse_args(argv)
    if a.cpu_smoke:
        a.models, a.lengths, a.prompt_len = ["smoke"], [64], 16
        a.repeats, a.warmup = min(a.repeats, 2), min(a.warmup, 1)
    for name in ("batch", "prompt_len", "repeats"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.warmup < 0 or min(a.lengths) < 1 or a.max_seconds <= 0:
        ap.error("--warmup must be >= 0, --lengths >= 1 and --max-seconds > 0")
    if a.out is None:
        a.out = str(Path(os.environ["OUT"]) / "gpu_step.json") if os.environ.get("OUT") else \
            str(Path(tempfile.gettempdir()) / "gpu_step.json")
    return a


def use_repo_and_carried_packages() -> None:
    """Put the repository, benchmarks/ (bench_step's synthetic batch) and `.whl/py` (packages carried to a GPU
    machine, docs/benchmarks/gpu.md) first on sys.path, so `python3 benchmarks/bench_gpu_step.py` works there
    without installing the project."""
    for p in (REPO / "benchmarks", REPO / ".whl" / "py", REPO):
        if p.is_dir() and str(p) not in sys.path:
            sys.path.insert(0, str(p))


def pack(dest: Path, python_version: str = "3.12") -> None:
    """Copy PACK_DISTS (code + dist-info, no __pycache__) from this environment into `dest`, and unpack the
    `python_version` wheel of each PACK_WHEELS package (same version as here, fetched with pip download)."""
    import importlib.metadata as md
    import shutil
    import subprocess
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACK_DISTS:
        dist = md.distribution(name)
        root = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in sorted(tops):
            src = root / top
            if top.endswith(".dist-info") or src.is_dir():
                shutil.copytree(src, dest / top, ignore=ignore, dirs_exist_ok=True)
            elif src.suffix == ".py":
                shutil.copy2(src, dest / top)
        print(f"packed {name} {dist.version}: {', '.join(sorted(t for t in tops if t != '__pycache__'))}")
    wheels = dest.parent / "wheels"
    for name in PACK_WHEELS:
        version = md.version(name)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", python_version, "--implementation", "cp",
                        "--platform", "manylinux2014_x86_64", "-d", str(wheels), f"{name}=={version}"], check=True)
        whl = sorted(wheels.glob(f"{name}-{version}-*.whl"))[-1]
        zipfile.ZipFile(whl).extractall(dest)
        print(f"packed {whl.name}")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB")


class Clock:
    """Wall-clock budget; `sync` waits for the device so a reading covers the work queued before it."""

    def __init__(self, device, max_seconds: float):
        import torch

        self.t0, self.max_seconds = time.perf_counter(), max_seconds
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def over(self) -> bool:
        return self.elapsed() > self.max_seconds

    def time(self, fn) -> float:
        self.sync()
        t = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t


def build_model(name: str, device, attn: str):
    """Random Qwen3ForCausalLM of the named size, built on `device` in bf16 (seed 0)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(**MODELS[name], pad_token_id=0, eos_token_id=1, bos_token_id=1, dtype="bfloat16",
                      attn_implementation=attn)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    return model


def make_dapo_trainer(model, batch: int, length: int, out_dir: str, cuda: bool):
    """A DAPOTrainer built as trainers.train.make_trainer builds it, around an in-memory model."""
    from harness.core.config import load_config
    from trainers.dapo import DAPOTrainer
    from trainers.tiny import build_tokenizer
    from trainers.train import grpo_args, validate

    # dapo_cpu preset (no vLLM) with the GPU step settings; 2 responses per prompt, `batch` prompts per update,
    # so validate() accepts any micro-batch size (gradient accumulation 2).
    cfg = load_config("train", [
        f"out={out_dir}", "trainer=dapo_cpu", "data=arith", "model.dtype=bfloat16",
        f"trainer.bf16={str(cuda).lower()}", "trainer.gradient_checkpointing=true",
        f"trainer.micro_batch_size={batch}", "trainer.num_generations=2",
        f"trainer.prompts_per_update={batch}", f"trainer.prompts_per_rollout={batch}",
        f"trainer.max_completion_length={length}", "trainer.overlong_buffer=0"])
    plan = validate(cfg)
    args = grpo_args(plan, int(cfg.seed))
    tokenizer = build_tokenizer()  # only pad/eos ids are used: the batch is synthetic
    trainer = DAPOTrainer(model=model, reward_funcs=[plan.reward], args=args, train_dataset=plan.loader(cfg.data),
                          processing_class=tokenizer, dapo=plan.dapo)
    enable_checkpointing(trainer.model, trainer.args)  # Trainer.train() does this; the benchmark never calls it
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by train()
    return trainer


def enable_checkpointing(model, args) -> None:
    """Activation checkpointing as transformers' Trainer.train() switches it on (transformers 5.17 and 5.24
    names: `gradient_checkpointing*` became `activation_checkpointing*`)."""
    on = getattr(args, "activation_checkpointing", None)
    on = args.gradient_checkpointing if on is None else on
    if not on:
        return
    kw = getattr(args, "activation_checkpointing_kwargs", None) or getattr(args, "gradient_checkpointing_kwargs", None)
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw or None)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw or None)


def checkpointing_on(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def estimate_step_bytes(n_params: int, m: dict, B: int, S: int) -> int:
    """Rough peak of one bf16 forward+backward with gradient checkpointing (weights, grads, per-layer
    checkpoints, one layer recomputed, the chunked LM head), times 1.5 for allocator slack."""
    H, L, I = m["hidden_size"], m["num_hidden_layers"], m["intermediate_size"]
    q = m["num_attention_heads"] * m["head_dim"]
    act_layer = B * S * (6 * H + 4 * q + 4 * I) * 2  # one layer's saved tensors in the recomputed forward
    head = min(B * S, 32768) * m["vocab_size"] * 4 * 2  # one fp32 chunk of logits and its gradient
    return int(1.5 * (4 * n_params + B * S * H * 2 * (L + 2) + 2 * act_layer + head))


def median(xs):
    return statistics.median(xs) if xs else None


def step_benchmark(trainer, batch, variants, clock: Clock, a, cuda: bool) -> tuple[dict, bool]:
    """Round-robin forward+backward over variants; {variant: stats}, and whether the budget cut it short."""
    import torch

    model, times, peaks, stopped = trainer.model, {v: [] for v in variants}, {v: [] for v in variants}, False
    trainer._plan_mini_batch([batch])  # the batch is one whole mini-batch: one mask pool
    for i in range(a.warmup + a.repeats):
        if clock.over():
            stopped = True
            break
        for v in variants:
            trainer.dapo.mask_mode, trainer.dapo.mask_rho, trainer.dapo.mask_selection = VARIANTS[v]
            if cuda:
                torch.cuda.reset_peak_memory_stats()

            def step():
                trainer._compute_loss(model, batch).backward()

            dt = clock.time(step)
            peak = torch.cuda.max_memory_allocated() if cuda else None
            model.zero_grad(set_to_none=True)
            if i >= a.warmup:
                times[v].append(dt)
                if peak is not None:
                    peaks[v].append(peak)
    stats = {v: {"median_s": median(times[v]), "min_s": min(times[v]) if times[v] else None, "n": len(times[v]),
                 "peak_gib": max(peaks[v]) / GIB if peaks[v] else None} for v in variants}
    return stats, stopped


def micro_benchmarks(model, B: int, T: int, clock: Clock, device, reps: int) -> dict:
    """Entropy through TRL's fused LM head (with / without), standalone entropy, and mask selection alone."""
    import torch

    from trainers.masks import select_tokens

    out: dict = {}
    N, H = B * T, model.config.hidden_size
    weight = model.get_output_embeddings().weight
    g = torch.Generator(device=device).manual_seed(1)
    try:  # TRL's private kernel: the one `_compute_loss` uses (trl/kernels/chunked_logprob.py)
        from trl.kernels import ChunkedLogProbFunction
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        hidden = (torch.randn(N, H, generator=g, device=device) * 0.5).to(torch.bfloat16).requires_grad_()
        targets = torch.randint(0, weight.size(0), (N,), generator=g, device=device)
        for key, outs in (("head_logp_s", ("log_probs",)), ("head_logp_entropy_s", ("log_probs", "entropy"))):
            def head():
                lp = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE,
                                                  None, 1.0, outs)[0]
                lp.sum().backward()
                hidden.grad = None
                weight.grad = None
            ts = [clock.time(head) for _ in range(reps + 1)][1:]
            out[key] = median(ts)
        out["entropy_in_head_s"] = out["head_logp_entropy_s"] - out["head_logp_s"]
        del hidden
    except Exception as e:  # noqa: BLE001 - a changed private API must not lose the rest of the run
        out["head_error"] = f"{type(e).__name__}: {e}"
    from trl.trainer.utils import entropy_from_logits

    need = N * weight.size(0) * 2
    free = torch.cuda.mem_get_info()[0] if device.type == "cuda" else need * 4
    if need < free / 2:
        logits = torch.randn(N, weight.size(0), generator=g, device=device, dtype=torch.bfloat16)
        with torch.no_grad():
            ts = [clock.time(lambda: entropy_from_logits(logits)) for _ in range(reps + 1)][1:]
        out["entropy_from_logits_s"] = median(ts)
        del logits
    else:
        out["entropy_from_logits_s"] = None
        out["entropy_from_logits_skipped"] = f"logits need {need / GIB:.1f} GiB, free {free / GIB:.1f} GiB"
    ent = torch.rand(B, T, generator=g, device=device) * 5
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[:, int(T * 0.9):] = False
    for selection in ("topk", "quantile"):
        ts = [clock.time(lambda: select_tokens(ent, mask, "top", 0.2, selection, "local")) for _ in range(3 * reps + 1)]
        out[f"select_{selection}_s"] = median(ts[1:])
    return out


def print_table(rows: list[dict], variants: list[str]) -> None:
    ref = variants[0]
    print(f"\n{'model':<12}{'resp':>6}{'variant':>16}{'median s':>10}{'min s':>9}{'vs ' + ref:>10}{'peak GiB':>10}")
    for r in rows:
        head = f"{r['model']:<12}{str(r['length']):>6}"
        base = (r.get("variants") or {}).get(ref, {}).get("median_s")
        for v, s in (r.get("variants") or {}).items():
            if s["median_s"] is None:
                print(f"{head}{v:>16}  not timed (budget)")
                continue
            rel = f"{(s['median_s'] / base - 1) * 100:+.1f}%" if base else "-"
            peak = f"{s['peak_gib']:.2f}" if s["peak_gib"] is not None else "-"
            print(f"{head}{v:>16}{s['median_s']:>10.4f}{s['min_s']:>9.4f}{rel:>10}{peak:>10}")
        if r.get("error") or r.get("skipped"):
            print(f"{head}  {r.get('error') or r.get('skipped')}")
    print(f"\n{'model':<12}{'resp':>6}{'head logp s':>13}{'+entropy s':>12}{'entropy s':>11}"
          f"{'ent(logits) s':>15}{'topk sel s':>12}{'quant sel s':>13}")

    def f(x, w):
        return f"{x:>{w}.5f}" if isinstance(x, float) else f"{'-':>{w}}"
    for r in rows:
        m = r.get("micro")
        if m:
            print(f"{r['model']:<12}{str(r['length']):>6}{f(m.get('head_logp_s'), 13)}"
                  f"{f(m.get('head_logp_entropy_s'), 12)}"
                  f"{f(m.get('entropy_in_head_s'), 11)}{f(m.get('entropy_from_logits_s'), 15)}"
                  f"{f(m.get('select_topk_s'), 12)}{f(m.get('select_quantile_s'), 13)}")


def main(argv=None) -> int:
    a = parse_args(argv)
    use_repo_and_carried_packages()
    from bench_step import synthetic_batch  # the same fixed micro-batch as the CPU step benchmark
    if a.pack:
        pack(REPO / ".whl" / "py")
        return 0
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not a.cpu_smoke:
        print("error: CUDA is not available (torch.cuda.is_available() is False). This benchmark measures GPU time "
              "and memory; run it on a GPU machine, or pass --cpu-smoke to check the code path on the CPU.",
              file=sys.stderr)
        return 2
    device = torch.device("cpu" if a.cpu_smoke else "cuda")
    if a.cpu_smoke:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    import transformers
    import trl

    from harness.core.io import atomic_write_json, provenance

    clock = Clock(device, a.max_seconds)
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (--cpu-smoke)",
            "gpu_total_gib": torch.cuda.mem_get_info()[1] / GIB if device.type == "cuda" else None,
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "dtype": "bfloat16", "gradient_checkpointing": True, "attn_implementation": a.attn,
            "batch": a.batch, "prompt_len": a.prompt_len, "repeats": a.repeats, "warmup": a.warmup,
            "variants": {v: dict(zip(("mode", "rho", "selection"), VARIANTS[v])) for v in a.variants},
            "max_seconds": a.max_seconds}
    print(f"{info['device']}; torch {info['torch']}, transformers {info['transformers']}, trl {info['trl']}; "
          f"micro-batch {a.batch} x (prompt {a.prompt_len} + response L); budget {a.max_seconds:.0f} s", flush=True)
    rows: list[dict] = []
    stopped = False

    def write():
        atomic_write_json(a.out, provenance(None, benchmark="bench_gpu_step", **info, results=rows,
                                            stopped_early=stopped, wall_s=round(clock.elapsed(), 1)))

    tmp = tempfile.mkdtemp(prefix="bench_gpu_step_")
    for name in a.models:
        if stopped or clock.over():
            stopped = True
            break
        try:
            model = build_model(name, device, a.attn)
            trainer = make_dapo_trainer(model, a.batch, max(a.lengths), f"{tmp}/{name}", device.type == "cuda")
        except Exception as e:  # noqa: BLE001 - OOM or a version mismatch: record it, try the next size
            traceback.print_exc()
            rows.append({"model": name, "length": None, "error": f"building: {type(e).__name__}: {e}"[:400]})
            write()
            continue
        model = trainer.model
        n_params = sum(p.numel() for p in model.parameters())
        info.setdefault("gradient_checkpointing_on", {})[name] = checkpointing_on(model)
        print(f"{name}: {n_params / 1e6:.1f} M parameters, built at {clock.elapsed():.0f} s", flush=True)
        for T in a.lengths:
            if clock.over():
                stopped = True
                break
            row = {"model": name, "n_params": n_params, "length": T, "tokens": a.batch * (a.prompt_len + T)}
            rows.append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                need, free = estimate_step_bytes(n_params, MODELS[name], a.batch, a.prompt_len + T), \
                    torch.cuda.mem_get_info()[0]
                row["estimate_gib"] = need / GIB
                if need > free:
                    row["skipped"] = f"rough estimate {need / GIB:.1f} GiB > free {free / GIB:.1f} GiB"
                    print(f"  L={T}: skipped ({row['skipped']})", flush=True)
                    write()
                    continue
                row["weights_gib"] = torch.cuda.memory_allocated() / GIB
            batch = synthetic_batch(model.config.vocab_size, a.batch, a.prompt_len, T, device)
            t0 = clock.elapsed()
            cut = False
            try:
                row["variants"], cut = step_benchmark(trainer, batch, a.variants, clock, a, device.type == "cuda")
                if not a.no_micro and not clock.over():
                    row["micro"] = micro_benchmarks(model, a.batch, T, clock, device, max(3, a.repeats))
            except Exception as e:  # noqa: BLE001 - OOM or a kernel error: keep what was measured, go on
                traceback.print_exc()
                row["error"] = f"{type(e).__name__}: {e}"[:400]
                model.zero_grad(set_to_none=True)
            stopped = stopped or cut
            for s in (row.get("variants") or {}).values():
                s["tokens_per_s"] = row["tokens"] / s["median_s"] if s["median_s"] else None
            row["wall_s"] = round(clock.elapsed() - t0, 1)
            print(f"  L={T}: done in {row['wall_s']} s (total {clock.elapsed():.0f} s)", flush=True)
            del batch
            write()
        del trainer, model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write()
    print_table(rows, a.variants)
    print(f"\n{'STOPPED EARLY at --max-seconds; ' if stopped else ''}wrote {a.out} ({clock.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
