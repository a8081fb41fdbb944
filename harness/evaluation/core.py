"""`evaluate()`: generate k samples per problem with lm-eval, score them with each task's scorer, compute the
metrics with harness/metrics.py, write summary.csv, results_<benchmark>.json and samples_<benchmark>.jsonl.

Order of work: every argument, task, data file and replay line is checked before a model is loaded; the
context length (longest prompt + max_gen_toks) is checked before any generation.

Deviations and choices, stated:
- Generation is lm-eval's (`lm_eval.evaluator.evaluate` with `log_samples=True`); lm-eval's own metrics are not
  used: every raw response of the k repeats is scored by the task's `metadata.scorer`.
- len@k: the generated token count of each response (EOS included), recorded while lm-eval generates (hf:
  the decoded ids; vLLM: token_ids and finish_reason) and paired with the responses by their final text;
  `truncated` = did not finish within max_gen_toks. If pairing fails: the text re-encoded with the tokenizer,
  capped at max_gen_toks, and `truncated` = length >= max_gen_toks. Replay: lengths from the file's `lengths`
  when present, else the `tokenizer` given, else whitespace-separated words (`length_unit` in the results JSON
  says which);
  `truncated` from the file's `truncated` when present, else computed only when max_gen_toks is given.
"""
from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness import metrics as M
from harness.evaluation import backends, replay
from harness.evaluation.tasks import (build_task, call_scorer, data_file, expand_tasks, load_scorer, raw_config,
                                      read_docs, task_info, to_jsonable)
from harness.core.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, provenance
from harness.sandbox import check_sandbox

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm", "replay")
# Plain sampling at (temperature, top_p) whatever the checkpoint's generation_config.json says: transformers
# applies top_k=50 by default and a model's repetition_penalty; recent vLLM applies the model's config too.
PURE_SAMPLING = {"hf": {"top_k": 0, "repetition_penalty": 1.0}, "vllm": {"top_k": -1, "repetition_penalty": 1.0}}
SUMMARY_COLUMNS = ["model", "benchmark", "metric", "k", "value", "ci_low", "ci_high", "n_problems", "n_samples"]


def evaluate(model: Any = None, tasks: str | Sequence[str] = "math", out_dir: str | Path | None = None,
             backend: str = "hf", k: int = 16, *, tokenizer: Any = None, data_dir: str | Path | None = None,
             limit: int | None = None, temperature: float = 1.0, top_p: float = 1.0,
             max_gen_toks: int | None = None, seed: int = 0, pass_ks: Sequence[int] = (1, 2, 4, 8, 16),
             timeout_s: float = 5.0, bootstrap_iters: int = 2000, confidence: float = 0.95,
             replay_file: str | Path | None = None, model_name: str | None = None,
             allow_code_execution: bool = False, hf_options: dict | None = None,
             vllm_options: dict | None = None, config: Any = None) -> pd.DataFrame:
    """Evaluate `model` on `tasks` (task/group names) and return the summary rows as a DataFrame.

    model: a path (a training run directory uses its final/), a hub id, or an in-memory PreTrainedModel
    (hf backend; pass `tokenizer=`). backend: hf | vllm | replay (then `replay_file=`, no model).
    k samples per problem at `temperature`/`top_p`; `max_gen_toks` None = each task's default.
    `limit`: only the first `limit` problems of each task (quick runs). Files go to `out_dir` (if given).
    """
    names = check_inputs(model, tasks, out_dir, backend, k, limit=limit, temperature=temperature, top_p=top_p,
                         max_gen_toks=max_gen_toks, seed=seed, pass_ks=pass_ks, timeout_s=timeout_s,
                         bootstrap_iters=bootstrap_iters, confidence=confidence, replay_file=replay_file,
                         data_dir=data_dir, allow_code_execution=allow_code_execution, hf_options=hf_options,
                         vllm_options=vllm_options)
    infos = {n: task_info(n) for n in names}
    scorers = {n: load_scorer(infos[n].scorer) for n in names}
    built = {n: build_task(n, k=k, temperature=temperature, top_p=top_p, max_gen_toks=max_gen_toks,
                           data_dir=data_dir, extra_generation=PURE_SAMPLING.get(backend)) for n in names}
    label = model_name or _model_label(model, replay_file)

    if backend == "replay":
        results = _collect_replay(built, replay_file, limit, tokenizer, max_gen_toks)
    else:
        results = _collect_generated(model, built, backend, tokenizer, limit, seed, hf_options or {},
                                     vllm_options or {}, max_gen_toks, allow_code_execution)

    rows = []
    for name in names:
        r = results[name]
        k_used = len(r["responses"][0]) if r["responses"] else int(k)
        if k_used != int(k):
            log.warning("task %s: %d responses per problem scored (k=%d was asked for); the results record k=%d",
                        name, k_used, int(k), k_used)
        with _code_execution(allow_code_execution):
            scores = call_scorer(*scorers[name], r["docs"], r["responses"], timeout_s)
        summary, record = _summarize(name, label, r, scores, pass_ks, bootstrap_iters, confidence, seed)
        rows.extend(summary)
        if out_dir is not None:
            _write_task_files(Path(out_dir), name, label, infos[name], r, scores, summary, record,
                              dict(backend=backend, k=k_used, k_requested=int(k), temperature=temperature,
                                   top_p=top_p,
                                   max_gen_toks=r["max_gen_toks"], seed=seed, limit=limit,
                                   data_dir=str(data_dir) if data_dir else None, timeout_s=timeout_s,
                                   replay_file=str(replay_file) if replay_file else None,
                                   bootstrap_iters=bootstrap_iters, confidence=confidence), config)
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "summary.csv", df.to_csv(index=False))
    return df


# ---------------------------------------------------------------- checks

def check_inputs(model: Any, tasks: str | Sequence[str], out_dir: str | Path | None, backend: str, k: int, *,
                 limit: int | None = None, temperature: float = 1.0, top_p: float = 1.0,
                 max_gen_toks: int | None = None, seed: int = 0, pass_ks: Sequence[int] = (1,),
                 timeout_s: float = 5.0, bootstrap_iters: int = 2000, confidence: float = 0.95,
                 replay_file: str | Path | None = None, data_dir: str | Path | None = None,
                 allow_code_execution: bool = False, hf_options: dict | None = None,
                 vllm_options: dict | None = None, check_model: bool = True) -> list[str]:
    """Every argument, task, data file, replay file, output folder and model path, before anything is loaded;
    returns the leaf task names. ValueError / FileNotFoundError name the `harness eval` key, the value and what is
    valid. `check_model=False` (a grid's evaluation settings, checked before its checkpoints exist) skips the
    model and the output folder."""
    from harness.core.config import (require_choice, require_int, require_model_path, require_number,
                                     require_output_dir, require_seed)

    require_choice(backend, BACKENDS, "backend")
    k = require_int(k, "k", 1)
    if limit is not None:
        require_int(limit, "limit", 1)
    require_number(temperature, "generation.temperature", 0)
    require_number(top_p, "generation.top_p", 0, 1, low_open=True)
    if temperature == 0 and k > 1 and backend != "replay":
        raise ValueError("generation.temperature=0 is greedy decoding: k > 1 would repeat the same response; use k=1")
    if max_gen_toks is not None:
        require_int(max_gen_toks, "generation.max_gen_toks", 1)
    require_seed(seed)
    if not isinstance(pass_ks, (list, tuple)) or not pass_ks:
        raise ValueError(f"pass_ks={pass_ks!r} is not valid: expected a list of integers >= 1 (those <= k are "
                         "reported)")
    for p in pass_ks:
        require_int(p, "pass_ks", 1)
    require_number(timeout_s, "scoring.timeout_s", 0, low_open=True)
    require_int(bootstrap_iters, "bootstrap.iters", 10)  # fewer resamples give intervals of (almost) no width
    require_number(confidence, "bootstrap.confidence", 0, 1, low_open=True, high_open=True)
    for key, v in (hf_options or {}).items():
        if key == "batch_size":
            require_int(v, "hf.batch_size", 1)
    for key, v in (vllm_options or {}).items():
        if key in ("tensor_parallel_size", "data_parallel_size"):
            require_int(v, f"vllm.{key}", 1)
        elif key == "gpu_memory_utilization":
            require_number(v, "vllm.gpu_memory_utilization", 0, 1, low_open=True)
    names = expand_tasks(tasks)
    unsafe = [n for n in names if raw_config(n).get("unsafe_code")]
    if unsafe and not allow_code_execution:  # replay too: scoring runs the code
        raise ValueError(f"tasks {', '.join(unsafe)} run model-written code when scored; set "
                         "allow_code_execution=true to run it in the sandbox (docs/ood.md), or leave them out")
    if unsafe and allow_code_execution and check_model:
        check_sandbox()  # before any data or model: raises if code cannot run here; one line on what is isolated
    if data_dir is not None:
        if not Path(data_dir).expanduser().is_dir():
            raise FileNotFoundError(f"data_dir={str(data_dir)!r} is not a folder")
        for n in names:  # every file checked before any is loaded
            path = data_file(n, data_dir)
            with open(path, "rb") as f:
                if not any(line.strip() for line in f):
                    raise ValueError(f"data_dir: {path} is empty; task {n!r} needs its problems there")
    if backend == "replay":
        if not replay_file:
            raise ValueError("backend=replay needs replay_file=FILE (a JSONL of responses)")
        if not Path(replay_file).is_file():
            raise FileNotFoundError(f"replay_file={str(replay_file)!r} does not exist")
    elif check_model:
        if model is None:
            raise ValueError(f"backend={backend} needs a model: checkpoint=PATH (a model folder or a training run "
                             "folder) or a hub id")
        if isinstance(model, (str, Path)):  # else an in-memory model
            require_model_path(model, "checkpoint", run_dir_ok=True)
    if check_model and out_dir is not None:
        require_output_dir(out_dir, "out")
    return names


def _model_label(model, replay_file) -> str:
    if model is None:
        return f"replay:{Path(replay_file).name}"
    if isinstance(model, (str, Path)):
        return str(model)
    return str(getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
               or type(model).__name__)


@contextmanager
def _code_execution(allowed: bool):
    """HF_ALLOW_CODE_EVAL=1 only while scoring, and only when allowed (code tasks' scorers check it)."""
    old = os.environ.get("HF_ALLOW_CODE_EVAL")
    if allowed:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    else:
        os.environ.pop("HF_ALLOW_CODE_EVAL", None)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_ALLOW_CODE_EVAL", None)
        else:
            os.environ["HF_ALLOW_CODE_EVAL"] = old


# ---------------------------------------------------------------- generation and replay

def _collect_generated(model, built, backend, tokenizer, limit, seed, hf_opts, vllm_opts, max_gen_toks,
                       allow_code) -> dict[str, dict]:
    import numpy as np
    import torch
    from lm_eval.evaluator import evaluate as lm_evaluate

    gen_len = {n: int(t.config.generation_kwargs["max_gen_toks"]) for n, t in built.items()}
    if backend == "hf":
        lm = backends.make_hf(model, tokenizer, **hf_opts)
    else:
        if not isinstance(model, str):
            raise ValueError("backend=vllm needs a model path or hub id, not an in-memory model")
        tok, context = backends.context_of(model, tokenizer, vllm_opts.get("max_model_len"))
        for name, task in built.items():
            docs = read_docs(task)[:limit] if limit else read_docs(task)
            backends.check_prompts_fit(tok, context, name, [task.doc_to_text(d) for d in docs], gen_len[name])
        lm = backends.make_vllm(model, tokenizer, seed=seed, max_gen_toks=max(gen_len.values()), **vllm_opts)
    try:
        for name, task in built.items():
            docs = read_docs(task)[:limit] if limit else read_docs(task)
            prompts = [task.doc_to_text(d) for d in docs]
            backends.check_context(lm, name, prompts, gen_len[name])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        t0 = time.time()
        res = lm_evaluate(lm, {"tasks": dict(built), "groups": {}, "group_map": {}}, limit=limit,
                          log_samples=True, bootstrap_iters=0, confirm_run_unsafe_code=allow_code)
        gen_s = time.time() - t0
    finally:
        backends.restore(lm)
    tok = backends.lm_tokenizer(lm)
    gen_info = getattr(lm, "gen_info", {})  # hf: (generated tokens, ended with EOS) per response
    out = {}
    for name in built:
        samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
        docs = [s["doc"] for s in samples]
        responses = [list(s["resps"][0]) for s in samples]  # the raw k responses (repeats) of the one request
        info = {inst.doc_id: gen_info.get(id(inst)) for inst in built[name].instances}
        exact = all(info.get(s["doc_id"]) and len(info[s["doc_id"]]) == len(rs) and None not in info[s["doc_id"]]
                    for s, rs in zip(samples, responses))
        if exact:
            lengths = [[n for n, _ in info[s["doc_id"]]] for s in samples]
            truncated = [[not eos and n >= gen_len[name] for n, eos in info[s["doc_id"]]] for s in samples]
            unit = "tokens (generated, EOS included)"
        else:  # no records (pairing failed): re-encode the text
            flat = [r for rs in responses for r in rs]
            lengths = _regroup([min(n, gen_len[name]) for n in backends.token_lengths(tok, flat)], responses)
            truncated = [[n >= gen_len[name] for n in ls] for ls in lengths]
            unit = "tokens (re-encoded text)"
        out[name] = {"docs": docs, "responses": responses, "prompts": [s["arguments"][0][0] for s in samples],
                     "lengths": lengths, "truncated": truncated,
                     "length_unit": unit, "max_gen_toks": gen_len[name], "n_missing": 0,
                     "generation_kwargs": dict(built[name].config.generation_kwargs),
                     "generation_seconds": round(gen_s, 2)}
    return out


def _collect_replay(built, replay_file, limit, tokenizer, max_gen_toks) -> dict[str, dict]:
    lines = replay.read_replay(replay_file)
    unknown = sorted(set(lines) - set(built))
    if unknown:
        raise ValueError(f"replay file has tasks not asked for: {', '.join(unknown)} (tasks={', '.join(built)})")
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    out = {}
    for name, task in built.items():
        docs = read_docs(task)
        pairs, n_missing = replay.match(name, docs, lines.get(name, []))
        if not pairs:
            raise ValueError(f"replay: no lines for task {name} in {replay_file}")
        if limit:
            pairs = pairs[:limit]
        counts = {len(row["responses"]) for _, row in pairs}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"replay: task {name}: every problem needs the same (non-zero) number of responses, "
                             f"got {sorted(counts)}")
        responses = [[str(x) for x in row["responses"]] for _, row in pairs]
        if all(isinstance(row.get("lengths"), list) and len(row["lengths"]) == len(row["responses"])
               for _, row in pairs):
            lengths, unit = [[int(x) for x in row["lengths"]] for _, row in pairs], "tokens (from the file)"
        elif tokenizer is not None:
            lengths = _regroup(backends.token_lengths(tokenizer, [r for rs in responses for r in rs]), responses)
            unit = "tokens"
        else:
            lengths, unit = [[len(r.split()) for r in rs] for rs in responses], "words (no tokenizer given)"
            log.warning("replay: task %s: the file has no token counts and no tokenizer was given, so len@k "
                        "counts whitespace-separated WORDS, not tokens (give tokenizer=PATH for tokens)", name)
        known = max_gen_toks is not None and unit.startswith("tokens")
        from_file = all(isinstance(row.get("truncated"), list) and len(row["truncated"]) == len(row["responses"])
                        for _, row in pairs)
        out[name] = {"docs": [d for d, _ in pairs], "responses": responses,
                     "prompts": [task.doc_to_text(d) for d, _ in pairs], "lengths": lengths,
                     "truncated": ([[bool(t) for t in row["truncated"]] for _, row in pairs] if from_file
                                   else [[n >= max_gen_toks for n in ls] for ls in lengths] if known else None),
                     "length_unit": unit, "max_gen_toks": max_gen_toks, "n_missing": n_missing}
    return out


def _regroup(flat: list, shape: list[list]) -> list[list]:
    out, i = [], 0
    for rs in shape:
        out.append(flat[i:i + len(rs)])
        i += len(rs)
    return out


# ---------------------------------------------------------------- metrics and files

def _summarize(name, label, r, scores, pass_ks, iters, confidence, seed):
    correct = [[s.correct for s in ss] for ss in scores]
    extracted = [[s.extracted for s in ss] for ss in scores]
    rows = M.summarize(correct, extracted, r["lengths"], r["truncated"], ks=pass_ks, iters=iters,
                       confidence=confidence, seed=seed)
    summary = [{"model": label, "benchmark": name, **row} for row in rows]
    status = Counter(s.status for ss in scores for s in ss)
    record = {"n_problems": len(correct), "n_samples": len(correct[0]), "n_missing": r["n_missing"],
              "status_counts": dict(status), "length_unit": r["length_unit"]}
    return summary, record


def _write_task_files(out: Path, name, label, info, r, scores, summary, record, protocol, config) -> None:
    from importlib.metadata import version

    samples = []
    for i, (doc, resps, ss, lens) in enumerate(zip(r["docs"], r["responses"], scores, r["lengths"])):
        samples.append({"task": name, "doc_id": i, "problem": doc.get("problem"), "gold": doc.get("gold"),
                        "prompt": r["prompts"][i], "responses": resps, "extracted": [s.extracted for s in ss],
                        "correct": [s.correct for s in ss], "status": [s.status for s in ss], "lengths": lens,
                        "truncated": r["truncated"][i] if r["truncated"] is not None else None})
        reasons = [getattr(s, "reason", None) for s in ss]  # e.g. the code sandbox's failure reasons
        if any(reasons):
            samples[-1]["reason"] = reasons
    atomic_write_jsonl(out / f"samples_{name}.jsonl", samples)
    result = {
        "benchmark": name, "model": label, "metrics": summary, "counts": record, "protocol": protocol,
        "task": {"name": name, "version": info.version, "scorer": info.scorer, "source": info.source,
                 "yaml": info.path},
        "generation_kwargs": r.get("generation_kwargs"), "generation_seconds": r.get("generation_seconds"),
        "provenance": provenance(config, lm_eval_version=version("lm_eval"),
                                 task_versions={name: info.version}),
    }
    atomic_write_json(out / f"results_{name}.json", to_jsonable(result))
