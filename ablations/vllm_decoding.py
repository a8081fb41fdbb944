"""Sampling with vLLM for the analyses (`backend=vllm`): paper Fig. 3's entropy-split temperature as a vLLM V1
logits processor, one engine for every setting.

`EntropyTemperatureLogits` wraps `ablations.token_entropy.EntropyTemperatureProcessor` (the same callable the HF
path uses) per request, from `SamplingParams.extra_args = {"t_high", "t_low", "threshold"}`. vLLM applies such a
processor to the raw logits before its own temperature, penalties and top-k/top-p, so the engine samples at
temperature 1.0 with no penalty, top-k or top-p: nothing else rescales the logits (paper: vLLM).
"""
from __future__ import annotations

from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from ablations.common import Response
from ablations.token_entropy import EntropyTemperatureProcessor


class EntropyTemperatureLogits(AdapterLogitsProcessor):
    """Fig. 3's decoding in vLLM: requests whose extra_args name `t_high` get an EntropyTemperatureProcessor."""

    def is_argmax_invariant(self) -> bool:
        return False  # T = 0 keeps only the argmax, other temperatures reshape the distribution

    def new_req_logits_processor(self, params):
        a = params.extra_args or {}
        if "t_high" not in a:
            return None
        return EntropyTemperatureProcessor(a["t_high"], a["t_low"], a["threshold"])


def engine(model_path: str, dtype: str, seed: int, options: dict):
    """A vLLM engine for `model_path` that can run EntropyTemperatureLogits; `options` are LLM() arguments
    (tensor_parallel_size, gpu_memory_utilization, max_model_len, kv_cache_memory_bytes, enforce_eager)."""
    from vllm import LLM

    return LLM(model=model_path, dtype=dtype, seed=seed, logits_processors=[EntropyTemperatureLogits],
               **{k: v for k, v in options.items() if v is not None})


def sample(llm, problems: list[dict], k: int, max_new_tokens: int, seed: int, t_high: float, t_low: float,
           threshold: float) -> list[Response]:
    """k responses per problem (`problem["prompt"]` as is) with the entropy-split temperature. Response ids end
    with the EOS token when the model produced it (as the HF path). Request i is seeded `seed + i * k` (vLLM seeds
    its n samples seed, seed + 1, ...), so every response has its own reproducible stream."""
    from vllm import SamplingParams

    tok = llm.get_tokenizer()
    ids = [tok(p["prompt"], add_special_tokens=False)["input_ids"] for p in problems]
    params = [SamplingParams(n=k, temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0,
                             max_tokens=max_new_tokens, seed=seed + i * k,
                             extra_args={"t_high": t_high, "t_low": t_low, "threshold": threshold})
              for i in range(len(problems))]
    outs = llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
    # text decoded as the HF path does (vLLM's incremental detokenizer may differ in spacing, e.g. a leading space
    # with the mini task's word-level tokenizer)
    return [Response(p["task"], p["problem"], x, list(c.token_ids), tok.decode(list(c.token_ids),
                                                                                skip_special_tokens=True))
            for p, x, o in zip(problems, ids, outs) for c in o.outputs]
