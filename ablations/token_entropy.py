"""Pure token-entropy math shared by the analyses (no file I/O, no model loading).

H_t = -sum_j p_tj log p_tj in nats, p_t = softmax(z_t / T), z_t = lm_head(h_t) (paper Sec. 3).

- `chunked_entropy` computes H from the last hidden states chunk by chunk over positions, so a long response never
  holds a float32 [tokens x vocab] tensor: peak extra memory is ~3 x chunk_size x vocab x 4 bytes (logits chunk,
  shifted float copy, exp). `impl="trl"` hands the same job to TRL's `ChunkedLogProbFunction` (a fused Triton
  kernel on CUDA, torch tiles elsewhere) instead of our loop.
- `naive_entropy` is the plain full-softmax reference (tests and the benchmark only).
- `EntropyTemperatureProcessor` is Fig. 3's two-temperature decoding as one callable usable by HF `generate` and
  as a vLLM per-request logits processor.

Deviations / choices, stated:
- The lm_head matmul runs in the weights' dtype (bf16 on GPU); the entropy itself is always float32. The paper does
  not say; verl and vLLM do the same.
- Models with logit soft-capping or logit scaling are refused (Qwen3 has neither), not silently mis-computed.
- The top-rho set (`top_fraction_mask`) takes exactly k = ceil(rho * N) positions with topk (the released code's
  rule, ties broken by torch.topk), over all response tokens pooled, not TRL's quantile + ">=" rule.
- The temperature processor measures each position's entropy at T = 1 from the raw logits (the threshold 0.672 is
  Fig. 2's 80th percentile of T = 1 entropies); T_low = 0 (or T_high = 0) means greedy for those positions.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

PAPER_HIGH_ENTROPY_THRESHOLD = 0.672  # nats; 80th percentile of Qwen3-8B token entropy (paper Fig. 2)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy in nats of softmax(logits / T) over the last axis; float32; `logits` is not modified.  [..., V] -> [...]

    Uses H = log S - sum_j e_j z_j / S with z = logits/T - max, e = exp(z), S = sum e (two [.., V] temporaries).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.to(torch.float32, copy=True)  # [..., V]
    if temperature != 1.0:
        z /= temperature
    z -= z.amax(-1, keepdim=True)
    z.nan_to_num_(nan=0.0, neginf=-1e30)  # -inf entries (masked vocabulary) give 0 * -1e30 = 0, not nan
    e = z.exp()  # [..., V]
    s = e.sum(-1)  # [...]
    return s.log() - e.mul_(z).sum(-1) / s


def _check_head(weight: torch.Tensor, hidden: torch.Tensor) -> None:
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"need hidden [N, H] and weight [V, H]; got {tuple(hidden.shape)} and {tuple(weight.shape)}")


def chunked_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    temperature: float = 1.0, chunk_size: int = 512, impl: str = "torch") -> torch.Tensor:
    """Entropy of softmax((hidden @ weight.T + bias) / T) per row, never materialising [N, V].  [N, H] -> [N] float32"""
    _check_head(weight, hidden)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if impl == "trl":
        from trl.kernels import ChunkedLogProbFunction

        targets = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)  # unused; entropy only
        with torch.no_grad():
            _, ent, *_ = ChunkedLogProbFunction.apply(hidden, weight, bias, targets, temperature, 4096, None, 1.0,
                                                      ("entropy",))
        return ent.float()
    if impl != "torch":
        raise ValueError(f"impl={impl!r}; choose torch or trl")
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)  # [N]
    with torch.no_grad():
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start:start + chunk_size].to(weight.dtype)  # [C, H]
            logits = h @ weight.T  # [C, V]
            if bias is not None:
                logits += bias
            out[start:start + chunk_size] = entropy_from_logits(logits, temperature)
            del logits
    return out


def naive_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  temperature: float = 1.0) -> torch.Tensor:
    """Reference: full float32 logits and full log-softmax.  [N, H] -> [N]"""
    _check_head(weight, hidden)
    with torch.no_grad():
        logits = (hidden.float() @ weight.float().T) / temperature  # [N, V]
        if bias is not None:
            logits += bias.float() / temperature
        logp = torch.log_softmax(logits, dim=-1)  # [N, V]
        del logits
        return -(logp.exp().mul_(logp)).sum(-1)


def top_fraction_mask(entropy: torch.Tensor, rho: float) -> torch.Tensor:
    """Boolean mask of exactly k = ceil(rho * N) highest-entropy positions.  [N] -> [N] bool"""
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    n = entropy.numel()
    k = math.ceil(rho * n)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.topk(entropy.flatten().float(), k, sorted=False).indices] = True
    return mask


def overlap_pct(mask: torch.Tensor, reference: torch.Tensor) -> float:
    """Percent of the reference's selected positions also selected by `mask` (Table 1's overlap)."""
    if mask.shape != reference.shape:
        raise ValueError(f"masks differ in shape: {tuple(mask.shape)} vs {tuple(reference.shape)}")
    return 100.0 * (mask & reference).sum().item() / max(int(reference.sum().item()), 1)


def entropy_summary(entropy: torch.Tensor, low: float = 0.01, high: float = PAPER_HIGH_ENTROPY_THRESHOLD,
                    percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99)) -> dict[str, float]:
    """Fig. 2's statistics: token count, mean, shares under `low` / above `high` (percent), percentiles (nats)."""
    h = entropy.flatten().double()
    if h.numel() == 0:
        raise ValueError("no tokens to summarise")
    out = {"n_tokens": float(h.numel()), "mean": h.mean().item(),
           f"share_below_{low:g}_pct": 100.0 * (h < low).double().mean().item(),
           f"share_above_{high:g}_pct": 100.0 * (h > high).double().mean().item()}
    qs = torch.quantile(h, torch.tensor([p / 100 for p in percentiles], dtype=torch.float64)) if h.numel() <= 2**24 \
        else torch.tensor([float(h.kthvalue(max(1, math.ceil(p / 100 * h.numel()))).values) for p in percentiles])
    out.update({f"p{p:g}": q.item() for p, q in zip(percentiles, qs)})
    return out


def percentile_bins(base: torch.Tensor, n_bins: int = 20) -> torch.Tensor:
    """Bin index 0..n_bins-1 of each position by its rank in `base` (equal-count bins, Fig. 4).  [N] -> [N] long"""
    n = base.numel()
    order = torch.argsort(base.flatten(), stable=True)
    ranks = torch.empty(n, dtype=torch.long)
    ranks[order] = torch.arange(n)
    return (ranks * n_bins) // max(n, 1)


class EntropyTemperatureProcessor:
    """Fig. 3: divide the logits by `t_high` where H(softmax(logits)) > threshold, else by `t_low`; T = 0 -> greedy.

    One callable for both engines, `(token_ids, logits) -> logits`:
    - HF `generate(logits_processor=LogitsProcessorList([p]))`: token_ids [B, T], logits [B, V].
    - vLLM per-request logits processor: token_ids list[int], logits [V] (wrap it in vLLM's
      `AdapterLogitsProcessor.new_req_logits_processor` on the V1 engine; see docs/analyses.md).
    Sample with the engine's own temperature 1.0, top_p 1.0, top_k off, so nothing else rescales the logits.
    """

    def __init__(self, t_high: float = 1.0, t_low: float = 1.0, threshold: float = PAPER_HIGH_ENTROPY_THRESHOLD):
        if t_high < 0 or t_low < 0:
            raise ValueError(f"temperatures must be >= 0, got t_high={t_high}, t_low={t_low}")
        self.t_high, self.t_low, self.threshold = float(t_high), float(t_low), float(threshold)

    def __repr__(self) -> str:
        return f"EntropyTemperatureProcessor(t_high={self.t_high}, t_low={self.t_low}, threshold={self.threshold})"

    @staticmethod
    def _scale(z: torch.Tensor, t: float) -> torch.Tensor:
        if t == 0:  # greedy: every token but the argmax gets -inf
            keep = torch.zeros_like(z, dtype=torch.bool).scatter_(-1, z.argmax(-1, keepdim=True), True)
            return z.masked_fill(~keep, float("-inf"))
        return z / t

    def __call__(self, token_ids, logits: torch.Tensor) -> torch.Tensor:
        high = (entropy_from_logits(logits) > self.threshold).unsqueeze(-1)  # [B, 1] or [1]
        if self.t_high == self.t_low == 1.0:
            return logits
        return torch.where(high, self._scale(logits, self.t_high), self._scale(logits, self.t_low)).to(logits.dtype)
