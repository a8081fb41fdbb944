"""Generation backends: lm-eval model objects for `hf` (CPU or one GPU, also a model already in memory) and
`vllm` (GPUs, tensor and data parallel). `replay` needs no model (harness/evaluation/replay.py).

Both are checked before any generation: prompt + max_gen_toks must fit the model's context (lm-eval would
otherwise left-truncate the prompt silently on hf, or fail late on vLLM).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def resolve_model_path(model: str) -> str:
    """A training run directory (with final/) -> its final model; otherwise the path or hub id unchanged."""
    p = Path(model).expanduser()
    if p.is_dir() and not (p / "config.json").exists() and (p / "final" / "config.json").exists():
        return str(p / "final")
    return str(p) if p.exists() else model


def _counting_hflm():
    """HFLM that also records, per response, the number of generated tokens and whether it ended with EOS.

    lm-eval returns text only. `tok_decode` sees each row's generated ids (`cont_toks`: generated tokens, then
    padding once the row finished); the count is the tokens up to and including the first EOS (or up to the
    padding of a row stopped by a stop string). After `generate_until`, each response string is paired with its
    record by its final text (stop strings applied as lm-eval does), and `gen_info[id(instance)]` lists
    (n_tokens, ended_with_eos) per repeat, in the order of `instance.resps`."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

    class CountingHFLM(HFLM):
        def tok_decode(self, tokens, skip_special_tokens: bool = True):
            text = super().tok_decode(tokens, skip_special_tokens=skip_special_tokens)
            log = getattr(self, "_harness_decoded", None)
            if log is not None and isinstance(tokens, list):
                log.append((text, *self._harness_count(tokens)))
            return text

        def _harness_count(self, ids: list[int]) -> tuple[int, bool]:
            eos = set(self._harness_eos_ids())
            pad = self.tokenizer.pad_token_id
            for i, t in enumerate(ids):
                if t in eos:
                    return i + 1, True
                if t == pad:
                    return i, False
            return len(ids), False

        def _harness_eos_ids(self) -> list[int]:
            ids = [self.tokenizer.eos_token_id]
            gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
            ids += gen_eos if isinstance(gen_eos, list) else [gen_eos]
            return [i for i in ids if i is not None]

        def generate_until(self, requests, disable_tqdm: bool = False):
            self._harness_decoded = []
            try:
                res = super().generate_until(requests, disable_tqdm=disable_tqdm)
                eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
                records = [[n, ended, False] for _, n, ended in self._harness_decoded]  # [n, eos, used]
                index: dict[str, dict[str, list[list]]] = {}  # stop list -> final text -> records
                self.gen_info = getattr(self, "gen_info", {})
                for req, out in zip(requests, res):
                    key = repr(req.args[1])
                    if key not in index:
                        kw = normalize_gen_kwargs(req.args[1], self.max_gen_toks)
                        stops = handle_stop_sequences(kw.pop("until", None), eos=eos_text)
                        index[key] = {}
                        for (text, _, _), rec in zip(self._harness_decoded, records):
                            index[key].setdefault(postprocess_generated_text(text, stops, None), []).append(rec)
                    match = next((r for r in index[key].get(out, []) if not r[2]), None)
                    if match is not None:
                        match[2] = True
                    self.gen_info.setdefault(id(req), []).append((match[0], match[1]) if match else None)
            finally:
                self._harness_decoded = None
            return res

    return CountingHFLM


def make_hf(model: Any, tokenizer: Any = None, *, batch_size: int = 16, device: str | None = None,
            dtype: str = "auto", max_length: int | None = None):
    """lm-eval's HFLM around a path / hub id, or around an in-memory PreTrainedModel (then `tokenizer` is
    required and the model stays on its device)."""
    import torch

    HFLM = _counting_hflm()
    if isinstance(model, str):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = resolve_model_path(model)
        return HFLM(pretrained=path, tokenizer=tokenizer if tokenizer is not None else path,
                    batch_size=batch_size, device=device, dtype=dtype, max_length=max_length)
    if tokenizer is None:
        raise ValueError("evaluate(): an in-memory model needs tokenizer=")
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ValueError("evaluate(): the tokenizer has no pad token (needed for batched generation)")
    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    lm._harness_restore_training = was_training  # the caller (a trainer) gets its mode back after evaluate()
    return lm


def make_vllm(model: str, tokenizer: str | None = None, *, tensor_parallel_size: int = 1,
              data_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
              dtype: str = "auto", seed: int = 0, max_gen_toks: int = 20480, **kwargs):
    """lm-eval's VLLM. The sampling seed is the engine's (`seed`), never one inside the generation kwargs."""
    from lm_eval.models.vllm_causallms import VLLM

    if not isinstance(model, str):
        raise ValueError("backend=vllm needs a model path or hub id, not an in-memory model")
    path = resolve_model_path(model)
    return VLLM(pretrained=path, tokenizer=tokenizer or path, tensor_parallel_size=tensor_parallel_size,
                data_parallel_size=data_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len, dtype=dtype, seed=seed, max_gen_toks=max_gen_toks, **kwargs)


def context_of(model: str, tokenizer: str | None = None, max_model_len: int | None = None) -> tuple[Any, int]:
    """(tokenizer, context length) of a model path / hub id without loading its weights: `max_model_len` if
    given, else the config's max_position_embeddings (what vLLM uses by default)."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(model)
    tok = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer) if tokenizer else path)
    if max_model_len:
        return tok, int(max_model_len)
    cfg = AutoConfig.from_pretrained(path)
    cfg = getattr(cfg, "text_config", None) or cfg
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        if getattr(cfg, attr, None):
            return tok, int(getattr(cfg, attr))
    raise ValueError(f"cannot find the context length of {model}; set vllm.max_model_len")


def check_prompts_fit(tokenizer, context: int, task_name: str, prompts: list[str], max_gen_toks: int) -> None:
    """The same check as `check_context`, before an engine exists (vLLM start-up takes minutes)."""
    longest = max((len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts), default=0)
    if longest + max_gen_toks > context:
        raise ValueError(f"task {task_name}: longest prompt ({longest} tokens) + max_gen_toks ({max_gen_toks}) = "
                         f"{longest + max_gen_toks} exceeds the model's context ({context} tokens); lower "
                         "generation.max_gen_toks or raise vllm.max_model_len")


def lm_tokenizer(lm) -> Any:
    return getattr(lm, "tokenizer", None)


def check_context(lm, task_name: str, prompts: list[str], max_gen_toks: int) -> int:
    """Raise ValueError if the longest prompt + max_gen_toks exceeds the model's context; return that prompt's
    length in tokens."""
    longest = max((len(lm.tok_encode(p)) for p in prompts), default=0)
    limit = int(lm.max_length)
    if longest + max_gen_toks > limit:
        raise ValueError(f"task {task_name}: longest prompt ({longest} tokens) + max_gen_toks ({max_gen_toks}) = "
                         f"{longest + max_gen_toks} exceeds the model's context ({limit} tokens); lower "
                         "generation.max_gen_toks or raise the context (hf.max_length / vllm.max_model_len)")
    return longest


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    """Response lengths in tokens by re-encoding the decoded text (no special tokens). This can differ by a
    token or two from the generated sequence (tokenisation is not always unique); stated in docs/evaluation.md."""
    if not texts:
        return []
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(e) for e in enc]


def restore(lm) -> None:
    if getattr(lm, "_harness_restore_training", False):
        lm.model.train()
