"""Which response tokens receive the policy gradient: pure, engine-agnostic token masks and loss normalisers.

The paper (arXiv 2506.01939, Eq. 6 and section 5.1 (ii)) keeps the policy-gradient term only for tokens whose
entropy is at or above the (1 - rho) quantile of the response-token entropies of the batch, and normalises the
masked loss by the number of selected tokens. Three implementations disagree on the details, so each detail is a
named option here (see docs/training.md):

- ``selection="topk"``: exactly ``k = ceil(rho * N)`` tokens (the released code, ``torch.topk``).
  ``selection="quantile"``: ``entropy >= quantile(1 - rho)`` with linear interpolation (TRL,
  ``GRPOTrainer.get_high_entropy_mask``); ties at the threshold are all kept, so more than rho*N tokens can pass.
- ``scope="local"``: the threshold is computed per call (per micro-batch, per rank: the released code).
  ``scope="gathered"``: the entropies of all data-parallel ranks are gathered first (TRL); ranks may hold
  different or zero token counts.
- the loss normaliser (``aggregate_loss``): ``"selected"`` takes the token mean over the selected tokens of each
  pool (micro-batch) and weights it by the pool's share of the mini-batch rows (paper section 5.1 (ii) and the
  released code); ``"all"`` divides the sum over selected tokens by all response tokens of the mini-batch (TRL's
  ``dapo`` normaliser), which makes the gradient about rho times smaller.

Modes: ``all`` (every response token; rho must be 1), ``top`` (highest entropy), ``bottom`` (lowest entropy),
``random`` (the same count as ``top`` would keep, chosen uniformly: a control the paper lacks).

Ties are broken deterministically: among equal entropies at the threshold the earlier token (flattened row-major
order, then lower rank) is kept first. Padding (``response_mask`` false) never enters the threshold.

Deviations and implementation notes:
- The threshold is an exact order statistic found without a full sort or ``torch.quantile`` (which refuses more
  than 2**24 elements): a seeded sample brackets it, counting passes confirm the bracket, and
  ``torch.kthvalue`` runs on the few values inside (``_kth_largest``). Any size works. For ``top``/``bottom``
  with ``scope="local"`` on more than ``_FAST_ABOVE`` elements, ``_local_select`` does this without any padded
  float copy: one chunked pass writes ``valid & entropy >= lo`` straight into the output mask while counting
  the tokens above the bracket and collecting the candidates inside it; afterwards only candidates below the
  threshold (and, for topk, ties past the k-th) are cleared. If the bracket misses it returns None and the plain
  path runs; both give the same mask, threshold and counts (tests/test_masks.py). The quantile's
  rank ``(1 - rho) * (N - 1)`` is computed in float64; torch.quantile computes it in the input dtype, so for very
  large N the two can pick neighbouring order statistics (TRL's own path cannot run at that size at all).
- ``bottom`` is ``top`` applied to ``-entropy``; for ``quantile`` that is ``entropy <= quantile(rho)``.
- ``random`` draws i.i.d. uniform keys per token and keeps the top ``k`` keys; with ``scope="gathered"`` the
  choice is uniform over all ranks' tokens. ``k`` is the count that ``top`` would keep under the same selection.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

MODES = ("all", "top", "bottom", "random")
SELECTIONS = ("topk", "quantile")
SCOPES = ("local", "gathered")
NORMALIZERS = ("all", "selected")


class MaskResult(NamedTuple):
    mask: torch.Tensor  # bool, same shape as entropy: True = policy gradient kept
    threshold: float  # entropy at the selection boundary (nan for mode all/random or no tokens)
    n_tokens: int  # response tokens taking part (over all ranks when scope="gathered")
    n_selected: int  # selected tokens (over all ranks when scope="gathered")


def check_mask_args(mode: str, rho: float, selection: str = "topk", scope: str = "local") -> None:
    """Raise ValueError naming the bad argument (before any compute is spent)."""
    if mode not in MODES:
        raise ValueError(f"mask mode={mode!r} is not valid; choose one of: {', '.join(MODES)}")
    if selection not in SELECTIONS:
        raise ValueError(f"mask selection={selection!r} is not valid; choose one of: {', '.join(SELECTIONS)}")
    if scope not in SCOPES:
        raise ValueError(f"mask scope={scope!r} is not valid; choose one of: {', '.join(SCOPES)}")
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or math.isnan(rho) or not 0.0 < rho <= 1.0:
        raise ValueError(f"mask rho={rho!r} is not valid; rho must be a number in (0, 1]")
    if mode == "all" and rho != 1.0:
        raise ValueError(f"mask mode='all' keeps every token, so rho must be 1.0 (got rho={rho!r})")


def check_normalizer(normalizer: str) -> None:
    if normalizer not in NORMALIZERS:
        raise ValueError(f"loss normalizer={normalizer!r} is not valid; choose one of: {', '.join(NORMALIZERS)}")


def _gather_values(values: torch.Tensor, group=None) -> tuple[torch.Tensor, int]:
    """All ranks' 1-D `values` concatenated in rank order, and the offset of this rank's values in it."""
    import torch.distributed as dist

    world = dist.get_world_size(group)
    n = torch.tensor([values.numel()], dtype=torch.long, device=values.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    sizes_i = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(max(sizes_i), 1), dtype=values.dtype, device=values.device)
    padded[: values.numel()] = values
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded, group=group)
    rank = dist.get_rank(group)
    gathered = torch.cat([c[:s] for c, s in zip(chunks, sizes_i)])
    return gathered, sum(sizes_i[:rank])


_EXACT_BELOW = 1 << 18  # below this size torch.kthvalue is used directly
_SAMPLE = 1 << 16  # sample size for bracketing the k-th value of larger inputs


def _kth_largest(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of 1-D `x` (1 <= k <= x.numel()); exact.

    Large inputs: a seeded random sample brackets the answer in [lo, hi]; two counting passes confirm the bracket
    (#(x > hi) < k <= #(x >= lo)) and the answer is the exact order statistic among the few values inside it.
    If the bracket misses (rare), the full torch.kthvalue is used. Either way the result is exact.
    """
    n = x.numel()
    if n <= _EXACT_BELOW:
        return torch.kthvalue(x, n - k + 1).values
    g = torch.Generator().manual_seed(n * 31 + k)
    sample = x[torch.randint(n, (_SAMPLE,), generator=g).to(x.device)].sort(descending=True).values  # [S]
    p = k / n
    sd = math.sqrt(_SAMPLE * p * (1 - p)) + 1
    hi = sample[max(int(p * _SAMPLE - 4 * sd), 0)]
    lo = sample[min(int(p * _SAMPLE + 4 * sd), _SAMPLE - 1)]
    above = int(torch.count_nonzero(x > hi))
    if above < k:
        cand = x[(x >= lo) & (x <= hi)]
        need = k - above
        if need <= cand.numel():
            return torch.kthvalue(cand, cand.numel() - need + 1).values
    return torch.kthvalue(x, n - k + 1).values


def _select_top(keys: torch.Tensor, all_keys: torch.Tensor, offset: int, k: int,
                t: torch.Tensor | None = None) -> torch.Tensor:
    """Exactly k of the largest `all_keys` (global), returned for the local slice `keys` = all_keys[offset:...].

    Ties at the k-th value are taken in order of position in `all_keys` (earliest first). `all_keys` may be
    `keys` itself (one rank) and may hold -inf for padding, which k never reaches. `t`: the k-th largest of
    `all_keys` when the caller has it already.
    """
    if k <= 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    t = _kth_largest(all_keys, k) if t is None else t
    at_least = keys >= t
    if all_keys is keys:
        n_ge = int(torch.count_nonzero(at_least))
    else:
        n_ge = int(torch.count_nonzero(all_keys >= t))
    if n_ge == k:  # no tie straddles the boundary (the usual case): one comparison decides
        return at_least
    need = k - int(torch.count_nonzero(all_keys > t))  # how many tokens equal to t are still needed (>= 1)
    ties_before = int(torch.count_nonzero(all_keys[:offset] == t))
    local_ties = keys == t
    rank_in_ties = torch.cumsum(local_ties, 0) + ties_before  # 1-based rank among all ties
    return (keys > t) | (local_ties & (rank_in_ties <= need))


def _quantile(keys: torch.Tensor, n: int, q: float) -> torch.Tensor:
    """torch.quantile over the n finite `keys` (linear interpolation), any size; -inf entries are padding."""
    pos = q * (n - 1)  # float64 rank, ascending, 0-based
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    v_lo = _kth_largest(keys, n - lo)  # ascending rank r = (n - r)-th largest
    v_hi = _kth_largest(keys, n - hi) if hi != lo else v_lo
    return torch.lerp(v_lo, v_hi, torch.tensor(pos - lo, dtype=keys.dtype, device=keys.device))


_FAST_ABOVE = 1 << 18  # local top/bottom selection over more elements than this uses _local_select
_CHUNK = 1 << 20  # elements per chunk of the bracket scan (its scratch masks stay in cache)
_Z = 4.0  # bracket half-width in binomial standard deviations of the sample


def _bracket(sample: torch.Tensor, n: int, ks: tuple[int, ...]) -> tuple[float, float]:
    """Keys [lo, hi] that contain the k-th largest of n keys for every k in `ks`, with high probability.

    sample: a uniform sample of the keys, sorted descending. An end the sample cannot bound is infinite.
    """
    s = sample.numel()
    p_hi, p_lo = min(ks) / n, max(ks) / n
    i_hi = int(p_hi * s - _Z * (math.sqrt(s * p_hi * (1 - p_hi)) + 1))
    i_lo = int(math.ceil(p_lo * s + _Z * (math.sqrt(s * p_lo * (1 - p_lo)) + 1)))
    hi = float(sample[i_hi]) if i_hi >= 0 else math.inf
    lo = float(sample[i_lo]) if i_lo < s else -math.inf
    return lo, hi


def _comparators(sign: float):
    """(key >= c, key > c) as comparisons on the entropy itself, key = sign * entropy (no negated copy)."""
    if sign > 0:
        return (lambda e, c, out: torch.ge(e, c, out=out)), (lambda e, c, out: torch.gt(e, c, out=out))
    return (lambda e, c, out: torch.le(e, -c, out=out)), (lambda e, c, out: torch.lt(e, -c, out=out))


def _positions(m: torch.Tensor) -> torch.Tensor:
    """Ascending flat positions of the True entries of 1-D bool `m` (sparse): nonzero on 8-byte words first."""
    if m.numel() % 8 or m.storage_offset() % 8:
        return m.nonzero().squeeze(1)
    words = m.view(torch.int64).nonzero().squeeze(1)  # [W] words holding at least one True
    row, col = m.view(-1, 8)[words].nonzero().unbind(1)
    return words[row] * 8 + col


def _scan(ent: torch.Tensor, valid: torch.Tensor, sign: float, lo: float,
          hi: float) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """One chunked pass over flat `ent` / `valid` with key = sign * entropy.

    Returns (out, above, pos, cand): out = valid & (key >= lo) [numel] bool (a superset of the final mask, which
    only the candidates can leave); above = #(valid & key > hi); pos, cand = the flat positions (ascending) and
    keys of the valid entries with lo <= key <= hi. The only full-size allocation is `out`; scratch is per chunk.
    """
    ge, gt = _comparators(sign)
    numel = ent.numel()
    out = torch.empty(numel, dtype=torch.bool, device=ent.device)
    b = torch.empty(min(_CHUNK, numel), dtype=torch.bool, device=ent.device)
    acc = torch.zeros(b.numel(), dtype=torch.uint8, device=ent.device)  # per-slot count of key > hi, < 255 adds
    above, poss = 0, []
    for i, s in enumerate(range(0, numel, _CHUNK)):
        e, v, o = ent[s:s + _CHUNK], valid[s:s + _CHUNK], out[s:s + _CHUNK]
        bc = b[:e.numel()]
        ge(e, lo, o).logical_and_(v)  # valid & key >= lo
        gt(e, hi, bc).logical_and_(o)  # valid & key > hi
        acc[:e.numel()].add_(bc.view(torch.uint8))
        if i % 255 == 254:
            above += int(acc.sum(dtype=torch.int64))
            acc.zero_()
        poss.append(_positions(bc.logical_xor_(o)) + s)  # valid & lo <= key <= hi
    above += int(acc.sum(dtype=torch.int64))
    pos = torch.cat(poss)
    cand = ent[pos]
    return out, above, pos, cand if sign > 0 else -cand


def _local_select(ent: torch.Tensor, valid: torch.Tensor, n: int, sign: float, selection: str,
                  rho: float) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """Mode top (sign 1) / bottom (sign -1) on one rank without a padded copy: (mask, key threshold, count).

    ent: float [numel] flat entropies; valid: bool [numel]; n = valid.sum() >= 1. A seeded sample of the valid
    keys brackets the order statistic(s) needed; one chunked pass (`_scan`) writes valid & key >= lo into the
    output, counts the keys above the bracket and collects the few inside it; torch.kthvalue on those gives the
    exact value(s), and only candidates below the threshold (or ties past the k-th) are then cleared.
    Returns None when the bracket misses (rare); the caller then uses the plain path. Same result as that path.
    """
    numel = ent.numel()
    g = torch.Generator().manual_seed(numel * 31 + n)
    idx = torch.randint(numel, (_SAMPLE,), generator=g).to(ent.device)
    sample = (ent[idx][valid[idx]] * sign).sort(descending=True).values  # [<= S] keys of valid tokens
    if sample.numel() == 0 or bool(sample.isnan().any()):
        return None
    if selection == "topk":
        k = min(max(math.ceil(rho * n - 1e-9), 1), n)
        ks = (k,)
    else:
        pos = (1.0 - rho) * (n - 1)  # float64 rank, ascending, 0-based (as in _quantile)
        r_lo = math.floor(pos)
        r_hi = min(r_lo + 1, n - 1)
        ks = (n - r_lo, n - r_hi)  # as k-th largest: the lower and the upper neighbour
    lo, hi = _bracket(sample, n, ks)
    out, above, where, cand = _scan(ent, valid, sign, lo, hi)
    if not all(above < kk <= above + cand.numel() for kk in ks):
        return None  # the bracket missed

    def kth(kk: int) -> torch.Tensor:  # the kk-th largest key overall = the (kk - above)-th largest candidate
        return torch.kthvalue(cand, cand.numel() - (kk - above) + 1).values

    if selection == "topk":
        t = kth(k)
        out[where[cand < t]] = False
        n_gt = above + int(torch.count_nonzero(cand > t))
        ties = where[cand == t]  # ascending flat positions
        if n_gt + ties.numel() != k:  # ties straddle the boundary: the earliest k - n_gt ties stay
            out[ties[k - n_gt:]] = False
        return out, t, k
    v_lo = kth(ks[0])
    v_hi = kth(ks[1]) if ks[1] != ks[0] else v_lo
    thr = torch.lerp(v_lo, v_hi, torch.tensor(pos - r_lo, dtype=ent.dtype, device=ent.device))
    if lo <= float(thr) <= hi:  # keys above hi all pass and keys below lo are not in `out`: fix the candidates
        out[where[cand < thr]] = False
        k = above + int(torch.count_nonzero(cand >= thr))
    else:  # lerp rounding left the bracket (not seen in practice): one more comparison
        ge, _ = _comparators(sign)
        ge(ent, thr, out).logical_and_(valid)
        k = int(torch.count_nonzero(out))
    return out, thr, k


def _distributed(scope: str, group) -> bool:
    if scope != "gathered":
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def select_tokens(entropy: torch.Tensor, response_mask: torch.Tensor, mode: str, rho: float,
                  selection: str = "topk", scope: str = "local", group=None,
                  generator: torch.Generator | None = None) -> MaskResult:
    """The token mask with its threshold and counts; see the module docstring for every option.

    entropy: float [...] (any shape, e.g. [B, T]); response_mask: bool/0-1 of the same shape.
    scope="gathered" gathers over the default (or `group`) torch.distributed process group when one with more
    than one rank is initialised (all ranks must call), and is the same as "local" otherwise.
    mode="random" with scope="gathered" needs a `generator` seeded alike on every rank.
    """
    check_mask_args(mode, rho, selection, scope)
    if entropy.shape != response_mask.shape:
        raise ValueError(f"entropy shape {tuple(entropy.shape)} != response_mask shape {tuple(response_mask.shape)}")
    valid = response_mask.bool()
    ent = entropy.detach().float()
    sign = -1.0 if mode == "bottom" else 1.0  # bottom = top of -entropy
    if _distributed(scope, group):
        keys = ent[valid] * sign  # [N_local] response tokens in row-major order
        all_keys, offset = _gather_values(keys, group)
        n = all_keys.numel()
        noise_shape = (n,)
    else:
        n = int(torch.count_nonzero(valid))
        if n and mode in ("top", "bottom") and valid.numel() > _FAST_ABOVE:  # large: no padded copy at all
            fast = _local_select(ent.reshape(-1), valid.reshape(-1), n, sign, selection, rho)
            if fast is not None:
                mask, thr, k = fast
                return MaskResult(mask.view(valid.shape), sign * float(thr), n, k)
        # no compaction: padding becomes -inf, which no selection reaches
        keys = torch.where(valid, ent, -sign * float("inf")).flatten()  # [numel], one copy; padding ends as -inf
        if sign < 0:
            keys.neg_()
        all_keys, offset = keys, 0
        noise_shape = (keys.numel(),)
    if n == 0:
        return MaskResult(torch.zeros_like(valid), float("nan"), 0, 0)
    if mode == "all":
        return MaskResult(valid.clone(), float("nan"), n, n)

    if selection == "topk":
        k = min(max(math.ceil(rho * n - 1e-9), 1), n)  # ceil, robust to float noise (0.2 * 50 = 10.000000000000002)
        thr = _kth_largest(all_keys, k)
        sel = _select_top(keys, all_keys, offset, k, thr) if mode != "random" else None
    else:
        thr = _quantile(all_keys, n, 1.0 - rho)
        sel = keys >= thr
        k = int(torch.count_nonzero(all_keys >= thr))
    if mode == "random":
        # uniform keys; every rank draws the same global vector, so the choice is uniform over all ranks' tokens
        noise = torch.rand(noise_shape, generator=generator,
                           device=generator.device if generator else "cpu").to(keys.device)
        if all_keys is keys:
            noise = torch.where(keys > float("-inf"), noise, float("-inf"))
            sel = _select_top(noise, noise, 0, k)
        else:
            sel = _select_top(noise[offset:offset + keys.numel()], noise, offset, k)
        threshold = float("nan")
    else:
        threshold = sign * float(thr)
    if all_keys is keys:
        return MaskResult(sel.view(valid.shape), threshold, n, k)
    out = torch.zeros_like(valid)
    out[valid] = sel
    return MaskResult(out, threshold, n, k)


def token_mask(entropy: torch.Tensor, response_mask: torch.Tensor, mode: str, rho: float,
               selection: str = "topk", scope: str = "local", group=None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool tensor (shape of `entropy`) of the tokens whose policy gradient is kept."""
    return select_tokens(entropy, response_mask, mode, rho, selection, scope, group, generator).mask


class Pool(NamedTuple):
    """One mask pool (a micro-batch of the released code) as seen from the rows at hand."""
    rows: torch.Tensor | None  # long [r]: the rows at hand that belong to the pool; None = all of them
    n_selected: int  # selected tokens in the whole pool (which may span several forward passes)
    share: float  # the pool's weight: its rows / the mini-batch rows (the released `loss_scale_factor`)


def aggregate_loss(per_token_loss: torch.Tensor, selected: torch.Tensor, normalizer: str,
                   n_response_tokens: float | torch.Tensor | None = None,
                   pools: list[Pool] | None = None) -> torch.Tensor:
    """Scalar loss of the rows at hand from per-token losses [B, T] and the selected-token mask [B, T].

    normalizer="selected": sum over `pools` of (sum of the pool's selected losses here) / (the pool's selected
        tokens) * (the pool's share): the released code's token mean per micro-batch times rows / mini-batch rows.
        When a pool spans several forward passes, the parts add up to the pool's token mean over the passes.
    normalizer="all": sum over selected tokens / `n_response_tokens` (the response-token count of the whole
        optimiser mini-batch on this rank, so the micro-batches of one step add up to TRL's token mean).
    """
    check_normalizer(normalizer)
    if normalizer == "all":
        total = (per_token_loss * selected).sum()
        n = n_response_tokens
        return total / (n.clamp(min=1.0) if torch.is_tensor(n) else max(n, 1.0))
    loss = per_token_loss.new_zeros(())
    for pool in pools or []:
        if pool.rows is None:
            part = (per_token_loss * selected).sum()
        else:
            part = (per_token_loss[pool.rows] * selected[pool.rows]).sum()
        loss = loss + part / max(pool.n_selected, 1) * pool.share
    return loss
