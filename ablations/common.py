"""Shared plumbing for the analyses: resolve runs and checkpoints, get responses, score them, write results.

Math lives in `ablations.token_entropy`; this module loads models, samples or reads responses, runs teacher-forced
forward passes and writes CSV/PNG files (atomically, each CSV with a `<stem>.provenance.json` sidecar).

Responses are token ids. Sampled responses keep the ids the model generated; saved ones (`samples_<benchmark>.jsonl`
from the evaluation engine, or any JSONL with `problem` and `responses`) are re-tokenised: prompt and response
separately, then concatenated, which can differ from the original sampling at the boundary by a token.
"""
from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ablations.token_entropy import chunked_entropy
from harness.core import rundir
from harness.core.config import ConfigError
from harness.core.io import atomic_write_json, atomic_write_text, provenance, read_jsonl

@dataclass
class Response:
    """One response: prompt ids and response ids (the tokens whose entropies are analysed)."""
    task: str
    problem: str
    prompt_ids: list[int]
    response_ids: list[int]
    text: str = ""


@dataclass
class Checkpoint:
    label: str  # "base", "checkpoint-N", "final"
    step: int
    path: str


# ---------------------------------------------------------------- runs, checkpoints, output folders

def run_dir(run: str | None) -> Path | None:
    """A training run directory; a grid cell directory (`<cell>/train/`) resolves to its `train/`."""
    if not run:
        return None
    p = Path(run)
    if (p / "train").is_dir() and not (p / "final").exists():
        p = p / "train"
    if not p.is_dir():
        raise ConfigError(f"run={run!r}: not a directory")
    return p


def default_out(cfg, name: str) -> Path:
    """`cfg.out`, else `<cell>/analysis` for a grid cell's run (`<cell>/train` beside `<cell>/cell.json`), else
    `<run>/analysis`."""
    if cfg.get("out"):
        return Path(cfg.out)
    run = run_dir(cfg.get("run"))
    if run is None:
        raise ConfigError(f"analyze {name}: give out=DIR (or run=RUN_DIR to write next to the run)")
    in_cell = run.name == "train" and (run.parent / "cell.json").exists()
    return (run.parent if in_cell else run) / "analysis"


def run_checkpoints(run: Path, base: str | None) -> list[Checkpoint]:
    """Base model (step 0), every saved intermediate model (`weights/step-N`, else `checkpoints/checkpoint-N`; labelled
    checkpoint-N) in step order, then `final/` (its step from summary.json; a saved model of that same step is the
    same weights and is left out)."""
    out = [Checkpoint("base", 0, base)] if base else []
    final = rundir.final_model(run)
    if final is None:
        raise ConfigError(f"run={run}: no final model (training unfinished: no {rundir.SUMMARY}; or no weights in "
                          f"{run / rundir.FINAL})")
    last = rundir.final_step(run)
    out += [Checkpoint(f"checkpoint-{step}", step, str(p)) for step, p in rundir.saved_weights(run).items()
            if step < last]
    out.append(Checkpoint("final", last, str(final)))
    return out


def base_model_of(run: Path, base: str | None) -> str:
    """`base=` if given, else what the run was trained from: its config.yaml `model.path` (a hub id or folder), or
    `<run>/base_model/` (where trainers/train.py builds the tiny model when `model.path` is null)."""
    if base:
        return base
    cfg_file = run / "config.yaml"
    if cfg_file.exists():
        from omegaconf import OmegaConf

        path = (OmegaConf.load(cfg_file).get("model") or {}).get("path")
        if path:
            return str(path)
    if (run / "base_model" / "config.json").exists():
        return str(run / "base_model")
    raise ConfigError(f"base model unknown for run {run}: pass base=PATH_OR_HUB_ID")


# ---------------------------------------------------------------- models

def pick_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_model(path: str, device: str = "auto", dtype: str = "auto", tokenizer: bool = True):
    """(model, tokenizer or None), eval mode. dtype auto: bfloat16 on CUDA, float32 on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    torch_dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                   "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    tok = AutoTokenizer.from_pretrained(path) if tokenizer else None
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    return model, tok


def _head(model):
    cfg = model.config.get_text_config()
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"):
        v = getattr(cfg, attr, None)
        if v not in (None, 1, 1.0):
            raise NotImplementedError(f"{type(model).__name__} has {attr}={v}; entropy from hidden states would "
                                      "ignore it (supported: plain lm_head models such as Qwen3)")
    head = model.get_output_embeddings()
    return getattr(model, model.base_model_prefix), head.weight, head.bias


def response_entropies(model, responses: list[Response], temperature: float = 1.0, chunk_size: int = 512,
                       impl: str = "torch") -> list[torch.Tensor]:
    """Teacher-forced entropy of each response token's predictive distribution: list of [L_i] float32 (CPU)."""
    backbone, weight, bias = _head(model)
    device = weight.device
    out = []
    with torch.no_grad():
        for r in responses:
            if not r.response_ids:
                out.append(torch.zeros(0))
                continue
            if not r.prompt_ids:
                raise ValueError(f"empty prompt for a response to {r.problem[:60]!r}: the first token has no context")
            ids = torch.tensor([r.prompt_ids + r.response_ids], device=device)  # [1, P+L]
            hidden = backbone(input_ids=ids, use_cache=False).last_hidden_state[0]  # [P+L, H]
            p = len(r.prompt_ids)
            # the distribution of response token i is predicted at position p + i - 1
            h = hidden[p - 1:p - 1 + len(r.response_ids)]  # [L, H]
            out.append(chunked_entropy(h, weight, bias, temperature, chunk_size, impl).cpu())
    return out


# ---------------------------------------------------------------- responses

def load_problems(path: str, n: int | None) -> list[dict]:
    """Problems from a JSONL (`problem` or `question` field), first `n`."""
    if not path or not Path(path).exists():
        raise ConfigError(f"problems={path!r}: file not found (a JSONL with a `problem` or `question` field)")
    rows = read_jsonl(path)[: n or None]
    for i, r in enumerate(rows):
        if not (r.get("problem") or r.get("question")):
            raise ConfigError(f"{path} line {i + 1}: no `problem` or `question` field")
    task = Path(path).stem
    return [{"task": r.get("task", task), "problem": r.get("problem") or r.get("question")} for r in rows]


def sample_files(samples: str) -> list[Path]:
    p = Path(samples)
    files = sorted(p.glob("samples_*.jsonl")) if p.is_dir() else sorted(Path(x) for x in glob.glob(samples))
    if not files:
        raise ConfigError(f"samples={samples!r}: no samples_*.jsonl file found")
    return files


def read_saved(samples: str, tokenizer, template: str, n_problems: int | None, k: int | None) -> list[Response]:
    """Responses from evaluation samples files (`task, problem, responses[, prompt]` per line), re-tokenised; the
    line's `prompt` (written by harness.evaluation) is used when present, else `template`."""
    out = []
    for f in sample_files(samples):
        for row in read_jsonl(f)[: n_problems or None]:
            if "problem" not in row or "responses" not in row:
                raise ConfigError(f"{f}: each line needs `problem` and `responses`")
            prompt = row.get("prompt") or template.replace("{question}", row["problem"])  # the engine's own prompt
            prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
            for text in row["responses"][: k or None]:
                rid = tokenizer(text, add_special_tokens=False).input_ids
                out.append(Response(row.get("task", f.stem.removeprefix("samples_")), row["problem"], prompt_ids,
                                    rid, text))
    if not out:
        raise ConfigError(f"samples={samples!r}: no responses")
    return out


def generate(model, tokenizer, problems: list[dict], template: str, k: int, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, logits_processor=None,
             batch_size: int = 16, prompt_key: str | None = None) -> list[Response]:
    """k sampled responses per problem with HF generate (ids kept as generated, stopped at EOS).

    The prompt is `template` with {question} = problem["problem"], or problem[prompt_key] as is when given."""
    from transformers import LogitsProcessorList

    torch.manual_seed(seed)
    gen_eos = model.generation_config.eos_token_id
    eos = sorted({tokenizer.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])} - {None})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else None)
    out = []
    procs = LogitsProcessorList([logits_processor] if logits_processor is not None else [])
    for prob in problems:
        text = prob[prompt_key] if prompt_key else template.replace("{question}", prob["problem"])
        prompt_ids = tokenizer(text, add_special_tokens=False).input_ids
        left = k
        while left > 0:
            n = min(left, batch_size)
            ids = torch.tensor([prompt_ids], device=model.device)
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=temperature,
                                 top_p=top_p, top_k=0, max_new_tokens=max_new_tokens, num_return_sequences=n,
                                 pad_token_id=pad, eos_token_id=eos or None, logits_processor=procs)
            for row in gen[:, len(prompt_ids):].tolist():
                stop = next((i for i, t in enumerate(row) if t in eos), None)
                if stop is not None:  # keep the EOS token: it was sampled, so its entropy counts
                    row = row[: stop + 1]
                while row and pad is not None and pad not in eos and row[-1] == pad:
                    row.pop()
                out.append(Response(prob["task"], prob["problem"], prompt_ids, row,
                                    tokenizer.decode(row, skip_special_tokens=True)))
            left -= n
    return out


def get_responses(cfg, model, tokenizer) -> list[Response]:
    """Saved responses (`samples=`) if given, else sample `k` per problem from `problems=` with this model."""
    if cfg.get("samples"):
        return read_saved(cfg.samples, tokenizer, cfg.prompt_template, cfg.n_problems, cfg.k)
    if not cfg.get("problems"):
        raise ConfigError("give samples=FILE_OR_EVAL_DIR (saved responses) or problems=JSONL (to sample)")
    problems = load_problems(cfg.problems, cfg.n_problems)
    return generate(model, tokenizer, problems, cfg.prompt_template, cfg.k, cfg.max_new_tokens,
                    cfg.temperature, cfg.top_p, cfg.seed)


def check_common(cfg, files: bool = True) -> None:
    """Fail on bad values before any model is loaded. `files=False`: a grid's analysis, checked before its cells
    have written what it will read (samples, run, models), so only values and given problem files are checked."""
    from harness.core.config import require_choice, require_int, require_model_path, require_number, require_seed

    if files and cfg.get("run"):
        run_dir(cfg.run)
    if files and cfg.get("model_path"):
        require_model_path(cfg.model_path, "model_path")
    if files and cfg.get("base"):
        require_model_path(cfg.base, "base")
    if not cfg.get("samples") and not cfg.get("problems"):
        raise ConfigError("give samples=FILE_OR_EVAL_DIR (saved responses) or problems=JSONL (to sample)")
    if files and cfg.get("samples"):
        sample_files(cfg.samples)
    elif not cfg.get("samples") and not Path(cfg.problems).is_file():
        raise ConfigError(f"problems={cfg.problems!r}: file not found (a JSONL with a `problem` or `question` field)")
    if "entropy_impl" in cfg:
        require_choice(cfg.entropy_impl, ("torch", "trl"), "entropy_impl")
    for key in ("k", "max_new_tokens", "chunk_size"):
        if key in cfg:
            require_int(cfg[key], key, 1)
    if cfg.get("n_problems") is not None:
        require_int(cfg.n_problems, "n_problems", 1)
    if "temperature" in cfg:
        require_number(cfg.temperature, "temperature", 0, low_open=True)
    if "top_p" in cfg:
        require_number(cfg.top_p, "top_p", 0, 1, low_open=True)
    require_seed(cfg.get("seed", 0))
    check_device(cfg)


def check_device(cfg) -> None:
    from harness.core.config import require_choice

    if "dtype" in cfg:
        require_choice(cfg.dtype, ("auto", "float32", "bfloat16", "float16"), "dtype")
    if "device" in cfg and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(cfg.device)):
        raise ConfigError(f"device={cfg.device!r} is not valid: expected auto, cpu, cuda or cuda:N")


def output_dir(cfg, name: str) -> Path:
    """default_out(), checked: a folder that can be written (before any model is loaded)."""
    from harness.core.config import require_output_dir

    return require_output_dir(default_out(cfg, name), "out")


# ---------------------------------------------------------------- writing results

def write_csv(df: pd.DataFrame, path: Path, cfg, **extra) -> Path:
    """CSV written atomically, with provenance in `<stem>.provenance.json` beside it."""
    atomic_write_text(path, df.to_csv(index=False))
    atomic_write_json(path.with_name(path.stem + ".provenance.json"),
                      provenance(cfg, file=path.name, rows=len(df), **extra))  # rows: checked by harness report
    return path


def save_figure(fig, path: Path) -> Path:
    """PNG written atomically (temporary file in the same folder, then os.replace)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        plt.close(fig)
    return path


def plt_agg():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dump_responses(responses: list[Response], path: Path, entropies: list[torch.Tensor] | None = None) -> Path:
    """The analysed responses as JSONL (ids, text and per-token entropy), so the numbers can be recomputed."""
    rows = [{"task": r.task, "problem": r.problem, "response": r.text, "response_ids": r.response_ids}
            for r in responses]
    for row, h in zip(rows, entropies or []):
        row["entropy"] = [round(x, 6) for x in h.tolist()]
    atomic_write_text(path, "".join(json.dumps(x) + "\n" for x in rows))
    return path


# ---------------------------------------------------------------- several checkpoints on one response set

def require(cfg, *keys: str) -> None:
    """Mandatory keys (`???` in the YAML) must be given; raise ConfigError naming them."""
    from omegaconf import OmegaConf

    missing = [k for k in keys if OmegaConf.is_missing(cfg, k) or cfg.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"missing required setting(s): {', '.join(f'{k}=...' for k in missing)}")


def checkpoint_entropies(cfg, run: Path) -> tuple[list[Checkpoint], list[Response], dict[str, torch.Tensor]]:
    """The final model's responses (sampled or saved), scored by the base model, each checkpoint and the final model.

    Returns the checkpoints in step order, the responses, and label -> entropies of all response tokens [N] (the
    same token order for every checkpoint).
    """
    ckpts = run_checkpoints(run, base_model_of(run, cfg.get("base")))
    final = ckpts[-1]
    model, tok = load_model(final.path, cfg.device, cfg.dtype)
    responses = get_responses(cfg, model, tok)
    if not any(r.response_ids for r in responses):
        raise RuntimeError("the responses have no tokens")
    ents = {final.label: torch.cat(response_entropies(model, responses, cfg.temperature, cfg.chunk_size,
                                                      cfg.entropy_impl))}
    del model
    for c in ckpts[:-1]:
        m, _ = load_model(c.path, cfg.device, cfg.dtype, tokenizer=False)  # the final model's tokenizer for all
        if m.get_output_embeddings().weight.shape[0] < len(tok):
            raise ValueError(f"{c.path}: vocabulary smaller than the final model's tokenizer ({len(tok)})")
        ents[c.label] = torch.cat(response_entropies(m, responses, cfg.temperature, cfg.chunk_size, cfg.entropy_impl))
        del m
    return ckpts, responses, ents
