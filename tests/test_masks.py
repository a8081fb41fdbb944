"""Token masks: hand-computed cases, a plain reference on random tensors, huge and empty inputs, two ranks (gloo)."""
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.masks import Pool, aggregate_loss, check_mask_args, select_tokens, token_mask

# Two rows; the last two tokens of row 1 are padding (their 0.0 must never be picked, even by "bottom").
E = torch.tensor([[0.1, 0.9, 0.5, 0.3],
                  [0.7, 0.2, 0.0, 0.0]])
M = torch.tensor([[1, 1, 1, 1],
                  [1, 1, 0, 0]], dtype=torch.bool)
# Response entropies sorted: 0.1 0.2 0.3 0.5 0.7 0.9 (N = 6)


def test_topk_top_hand_computed():
    # rho 0.5: k = ceil(0.5 * 6) = 3 -> 0.9, 0.7, 0.5; threshold = 0.5
    r = select_tokens(E, M, "top", 0.5)
    assert r.mask.tolist() == [[False, True, True, False], [True, False, False, False]]
    assert (r.n_tokens, r.n_selected) == (6, 3) and r.threshold == pytest.approx(0.5)
    # rho 0.2: k = ceil(1.2) = 2 -> 0.9, 0.7
    assert token_mask(E, M, "top", 0.2).tolist() == [[False, True, False, False], [True, False, False, False]]


def test_topk_bottom_hand_computed():
    # bottom rho 0.5: k = 3 lowest -> 0.1, 0.2, 0.3 (the padded 0.0s do not count); threshold = 0.3
    r = select_tokens(E, M, "bottom", 0.5)
    assert r.mask.tolist() == [[True, False, False, True], [False, True, False, False]]
    assert r.threshold == pytest.approx(0.3)


def test_quantile_hand_computed():
    # rho 0.5: q = 0.5, rank 0.5 * (6 - 1) = 2.5 -> 0.3 + 0.5 * (0.5 - 0.3) = 0.4; kept: >= 0.4 -> 0.5 0.7 0.9
    r = select_tokens(E, M, "top", 0.5, selection="quantile")
    assert r.threshold == pytest.approx(0.4)
    assert r.mask.tolist() == [[False, True, True, False], [True, False, False, False]]
    # rho 0.2: q = 0.8, rank 0.8 * 5 = 4.0 -> exactly 0.7; ">=" keeps 0.7 and 0.9
    r = select_tokens(E, M, "top", 0.2, selection="quantile")
    assert r.threshold == pytest.approx(0.7) and r.n_selected == 2
    # bottom rho 0.5 = entropy <= quantile(0.5) = 0.4 -> 0.1 0.2 0.3
    r = select_tokens(E, M, "bottom", 0.5, selection="quantile")
    assert r.mask.tolist() == [[True, False, False, True], [False, True, False, False]]


def test_ties_are_deterministic():
    e = torch.ones(1, 5)
    m = torch.ones(1, 5, dtype=torch.bool)
    # topk rho 0.4: k = ceil(2.0) = 2 of five equal values -> the two earliest positions
    assert token_mask(e, m, "top", 0.4).tolist() == [[True, True, False, False, False]]
    assert token_mask(e, m, "bottom", 0.4).tolist() == [[True, True, False, False, False]]
    # quantile: threshold = 1.0 and ">=" keeps all five ties (TRL's behaviour)
    assert token_mask(e, m, "top", 0.4, selection="quantile").sum() == 5


def test_all_and_random():
    assert torch.equal(token_mask(E, M, "all", 1.0), M)
    g = torch.Generator().manual_seed(0)
    r = select_tokens(E, M, "random", 0.5, generator=g)
    assert r.n_selected == 3 and int(r.mask.sum()) == 3 and not (r.mask & ~M).any()
    again = token_mask(E, M, "random", 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.mask, again)
    # uniform: over 2000 draws each of the 6 response tokens is kept about half the time
    counts = torch.zeros_like(E)
    g = torch.Generator().manual_seed(1)
    for _ in range(2000):
        counts += token_mask(E, M, "random", 0.5, generator=g).float()
    assert torch.all((counts[M] / 2000 - 0.5).abs() < 0.05)
    assert counts[~M].sum() == 0


@pytest.mark.parametrize("rho", [0, 0.0, -0.1, 1.5, float("nan"), "0.2"])
def test_bad_rho_is_rejected(rho):
    with pytest.raises(ValueError, match="rho"):
        token_mask(E, M, "top", rho)


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="mode='middle'.*top"):
        token_mask(E, M, "middle", 0.2)
    with pytest.raises(ValueError, match="selection='median'"):
        token_mask(E, M, "top", 0.2, selection="median")
    with pytest.raises(ValueError, match="scope='global'"):
        check_mask_args("top", 0.2, scope="global")
    with pytest.raises(ValueError, match="rho must be 1.0"):
        token_mask(E, M, "all", 0.2)
    with pytest.raises(ValueError, match="shape"):
        token_mask(E, M[:, :3], "top", 0.2)


@pytest.mark.parametrize("mode", ["top", "bottom", "all", "random"])
@pytest.mark.parametrize("selection", ["topk", "quantile"])
def test_empty_inputs(mode, selection):
    rho = 1.0 if mode == "all" else 0.2
    for e, m in [(torch.zeros(0, 7), torch.zeros(0, 7, dtype=torch.bool)),
                 (torch.rand(2, 3), torch.zeros(2, 3, dtype=torch.bool))]:
        r = select_tokens(e, m, mode, rho, selection)
        assert r.mask.shape == e.shape and not r.mask.any() and r.n_tokens == 0 and r.n_selected == 0


def reference_mask(e: torch.Tensor, m: torch.Tensor, mode: str, rho: float, selection: str) -> torch.Tensor:
    """Plain version: python lists, a full sort, float64 quantile done by hand."""
    flat = [(float(v), i) for i, (v, ok) in enumerate(zip(e.flatten().tolist(), m.flatten().tolist())) if ok]
    sign = 1.0 if mode == "top" else -1.0
    keys = [(sign * v, i) for v, i in flat]
    keep = set()
    if selection == "topk":
        k = math.ceil(round(rho * len(keys), 9))
        keep = {i for _, i in sorted(keys, key=lambda t: (-t[0], t[1]))[:k]}
    else:
        vals = sorted(torch.tensor([v for v, _ in keys], dtype=torch.float32).tolist())
        pos = (1 - rho) * (len(vals) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(vals) - 1)
        thr = torch.lerp(torch.tensor(vals[lo]), torch.tensor(vals[hi]), torch.tensor(pos - lo)).item()
        keep = {i for v, i in keys if v >= thr}
    out = torch.zeros(e.numel(), dtype=torch.bool)
    out[sorted(keep)] = True
    return out.view(e.shape)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", ["top", "bottom"])
@pytest.mark.parametrize("selection", ["topk", "quantile"])
def test_matches_reference_on_random_tensors(seed, mode, selection):
    g = torch.Generator().manual_seed(seed)
    b, t = 3 + seed, 17 + 5 * seed
    e = torch.rand(b, t, generator=g) * 3
    e[e < 0.6] = 0.0  # many exact ties at zero, as with near-deterministic tokens
    e = (e * 8).round() / 8  # and ties elsewhere
    m = torch.rand(b, t, generator=g) > 0.3
    for rho in (0.1, 0.2, 0.5, 0.8, 1.0):
        got = token_mask(e, m, mode, rho, selection)
        assert torch.equal(got, reference_mask(e, m, mode, rho, selection)), (rho, seed)


@pytest.mark.parametrize("seed", range(3))
def test_quantile_matches_trl_rule(seed):
    """TRL's get_high_entropy_mask: torch.quantile over response tokens, then entropy >= threshold."""
    g = torch.Generator().manual_seed(seed)
    e, m = torch.rand(8, 50, generator=g), torch.rand(8, 50, generator=g) > 0.2
    for rho in (0.1, 0.2, 0.5):
        thr = torch.quantile(e[m].float(), 1 - rho)
        trl = (e * m.float() >= thr) & m
        assert torch.equal(token_mask(e, m, "top", rho, "quantile"), trl)


def test_more_than_2_pow_24_tokens():
    n = 2**24 + 5  # torch.quantile refuses this size
    e = ((torch.arange(n) * 7919) % 1000).float().div(1000).view(1, n)  # many ties, values exact in float32
    m = torch.ones(1, n, dtype=torch.bool)
    r = select_tokens(e, m, "top", 0.1)
    k = math.ceil(0.1 * n)
    assert r.n_selected == k and int(r.mask.sum()) == k
    assert e[r.mask].min() >= e[~r.mask].max()
    ties = e[0] == e.new_tensor(r.threshold)  # the tie block straddles k: its earliest members are kept
    kept = r.mask[0] & ties
    assert 0 < int(kept.sum()) < int(ties.sum()) and not (ties & ~r.mask[0])[: int(kept.nonzero().max()) + 1].any()
    q = select_tokens(e, m, "top", 0.1, selection="quantile")
    # values 0.000..0.999 each fill n/1000 sorted slots; rank 0.9 * (n - 1) < 900 * n / 1000, so it lands in the
    # block of 0.899 (both neighbours are 0.899: no interpolation) and ">=" keeps every 0.899 tie: 10.1% of tokens
    assert q.threshold == pytest.approx(0.899, abs=1e-6)
    assert int(q.mask.sum()) == int((e >= e.new_tensor(0.899)).sum()) and abs(int(q.mask.sum()) / n - 0.101) < 1e-4


def test_aggregate_loss_normalisers():
    loss = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    sel = torch.tensor([[True, False, True, False]])
    # "all": (1 + 3) / 8 response tokens in the mini-batch = 0.5
    assert aggregate_loss(loss, sel, "all", 8.0).item() == pytest.approx(0.5)
    # "selected", one pool holding half the mini-batch's rows: (1 + 3) / 2 selected tokens * 0.5 = 1.0
    assert aggregate_loss(loss, sel, "selected", pools=[Pool(None, 2, 0.5)]).item() == pytest.approx(1.0)
    # two pools in one micro-batch, and a pool whose 5 selected tokens lie partly in another micro-batch:
    loss2 = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    sel2 = torch.tensor([[True, True], [False, True], [True, False]])
    pools = [Pool(torch.tensor([0]), 2, 0.25), Pool(torch.tensor([1, 2]), 5, 0.5)]
    # pool 0: (1 + 2) / 2 * 0.25 = 0.375; pool 1: (4 + 5) / 5 * 0.5 = 0.9; total 1.275
    assert aggregate_loss(loss2, sel2, "selected", pools=pools).item() == pytest.approx(1.275)
    with pytest.raises(ValueError, match="normalizer='mean'"):
        aggregate_loss(loss, sel, "mean", 8.0)


# ---------- two processes (gloo): the gathered threshold equals one process over the concatenation ----------

RANK_DATA = {  # per case: rank 0 and rank 1 entropies / masks (rank 1 may have no response tokens)
    "uneven": ([[0.1, 0.9, 0.5, 0.3], [0.7, 0.2, 0.0, 0.0]], [[1, 1, 1, 1], [1, 1, 0, 0]],
               [[0.5, 0.8, 0.5]], [[1, 1, 1]]),
    "rank1_empty": ([[0.1, 0.9, 0.5, 0.3]], [[1, 1, 1, 1]], [[0.4, 0.4]], [[0, 0]]),
    "ties_across_ranks": ([[0.5, 0.5, 0.1]], [[1, 1, 1]], [[0.5, 0.5, 0.9]], [[1, 1, 1]]),
}


def _worker(rank: int, init_file: str, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for name, (e0, m0, e1, m1) in RANK_DATA.items():
            e, m = (e0, m0) if rank == 0 else (e1, m1)
            e, m = torch.tensor(e), torch.tensor(m).bool()
            for mode in ("top", "bottom", "random"):
                for sel in ("topk", "quantile"):
                    for rho in (0.2, 0.5, 1.0):
                        g = torch.Generator().manual_seed(3)
                        r = select_tokens(e, m, mode, rho, sel, scope="gathered", generator=g)
                        results[(name, mode, sel, rho, rank)] = (r.mask.tolist(), r.n_tokens, r.n_selected)
    finally:
        dist.destroy_process_group()


def test_gathered_scope_two_processes(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
        results = dict(results)
    for name, (e0, m0, e1, m1) in RANK_DATA.items():
        # one process over the two ranks' response tokens in rank order
        vals0 = [v for v, k in zip(sum(e0, []), sum(m0, [])) if k]
        vals1 = [v for v, k in zip(sum(e1, []), sum(m1, [])) if k]
        e = torch.tensor([vals0 + vals1])
        m = torch.ones_like(e, dtype=torch.bool)
        for mode in ("top", "bottom", "random"):
            for sel in ("topk", "quantile"):
                for rho in (0.2, 0.5, 1.0):
                    want = select_tokens(e, m, mode, rho, sel, generator=torch.Generator().manual_seed(3))
                    got0, n0, k0 = results[(name, mode, sel, rho, 0)]
                    got1, n1, k1 = results[(name, mode, sel, rho, 1)]
                    picked = ([x for x, k in zip(sum(got0, []), sum(m0, [])) if k]
                              + [x for x, k in zip(sum(got1, []), sum(m1, [])) if k])
                    assert picked == want.mask[0].tolist(), (name, mode, sel, rho)
                    assert n0 == n1 == want.n_tokens and k0 == k1 == want.n_selected
                    # padding never selected on either rank
                    assert not any(x and not k for x, k in zip(sum(got1, []), sum(m1, [])))


@pytest.mark.parametrize("seed", range(3))
def test_sampled_bracket_is_exact_on_large_inputs(seed):
    """Above 2**18 values the k-th value is bracketed from a sample; it must equal torch.kthvalue exactly."""
    from trainers.masks import _kth_largest

    g = torch.Generator().manual_seed(seed)
    n = (1 << 18) + 1000 * (seed + 1)
    x = torch.rand(n, generator=g).pow(6)
    x[torch.rand(n, generator=g) < 0.4] = 0.0  # a huge tie block at zero
    x = (x * 64).round() / 64  # and many ties elsewhere
    for k in (1, 7, n // 10, n // 5, n // 2, int(n * 0.8), n - 1, n):
        assert _kth_largest(x, k) == torch.kthvalue(x, n - k + 1).values, k
    # the mask itself against a stable full sort (earliest position wins ties), with padding
    m = torch.rand(n, generator=g) > 0.1
    for mode, rho in (("top", 0.2), ("bottom", 0.8), ("top", 0.5)):
        keys = torch.where(m, x if mode == "top" else -x, float("-inf"))
        k = math.ceil(rho * int(m.sum()) - 1e-9)
        order = torch.sort(keys, descending=True, stable=True).indices[:k]
        want = torch.zeros(n, dtype=torch.bool)
        want[order] = True
        assert torch.equal(token_mask(x.view(1, n), m.view(1, n), mode, rho)[0], want), (mode, rho)


# ---------- the large-input local path (_local_select): forced on small tensors, and its fallback ----------

def _tie_heavy(seed: int, b: int, t: int):
    g = torch.Generator().manual_seed(seed)
    e = torch.rand(b, t, generator=g) * 3
    e[e < 0.6] = 0.0
    e = (e * 8).round() / 8
    return e, torch.rand(b, t, generator=g) > 0.3


@pytest.mark.parametrize("chunk", [1, 3, 8, 64])  # 1: over 255 chunks, the uint8 counter flushes
@pytest.mark.parametrize("selection", ["topk", "quantile"])
def test_local_select_matches_reference_when_forced(monkeypatch, chunk, selection):
    """Force the large-input path on small tie-heavy tensors (odd and word-sized chunks, a small sample so the
    bracket often misses): every answer equals the plain reference, and both the bracket and the fallback ran."""
    import trainers.masks as tm

    monkeypatch.setattr(tm, "_FAST_ABOVE", 0)
    monkeypatch.setattr(tm, "_CHUNK", chunk)
    monkeypatch.setattr(tm, "_SAMPLE", 24)
    monkeypatch.setattr(tm, "_Z", 0.5)  # a narrow bracket: some miss
    hits = misses = 0
    for seed in range(8):
        e, m = _tie_heavy(seed, 3 + seed, 17 + 5 * seed)
        n = int(m.sum())
        for mode in ("top", "bottom"):
            sign = 1.0 if mode == "top" else -1.0
            for rho in (0.05, 0.2, 0.5, 0.8, 1.0):
                want = reference_mask(e, m, mode, rho, selection)
                fast = tm._local_select(e.flatten(), m.flatten(), n, sign, selection, rho)
                if fast is None:
                    misses += 1
                else:
                    hits += 1
                    assert torch.equal(fast[0].view(e.shape), want) and fast[2] == int(want.sum()), (seed, rho)
                r = select_tokens(e, m, mode, rho, selection)  # fast path or its fallback
                assert torch.equal(r.mask, want) and r.n_selected == int(want.sum()), (seed, mode, rho)
    assert hits > 0 and misses > 0, (hits, misses)


def test_local_select_bracket_miss_falls_back(monkeypatch):
    """A bracket that misses the k-th value must be detected and the plain path used, with the same answer."""
    import trainers.masks as tm

    e, m = _tie_heavy(0, 5, 40)
    monkeypatch.setattr(tm, "_FAST_ABOVE", 0)
    monkeypatch.setattr(tm, "_bracket", lambda sample, n, ks: (10.0, 20.0))  # above every entropy
    assert tm._local_select(e.flatten(), m.flatten(), int(m.sum()), 1.0, "topk", 0.2) is None
    for mode in ("top", "bottom"):
        for selection in ("topk", "quantile"):
            r = select_tokens(e, m, mode, 0.2, selection)
            assert torch.equal(r.mask, reference_mask(e, m, mode, 0.2, selection)), (mode, selection)


@pytest.mark.parametrize("mode", ["top", "bottom"])
def test_large_local_path_equals_plain_path(monkeypatch, mode):
    """Above _FAST_ABOVE elements (no forcing): mask, threshold and counts equal the plain path's, for both
    selections, on a non-contiguous float16 input with padding and a tie block at the threshold's side."""
    import trainers.masks as tm

    g = torch.Generator().manual_seed(5)
    n = (1 << 18) + 4099
    x = ((torch.rand(2 * n, generator=g).pow(3) * 32).round() / 32).half().view(n, 2)[:, 0]  # [n] strided
    x[torch.rand(n, generator=g) < 0.3] = 0.0
    m = torch.rand(n, generator=g) > 0.2
    sign = 1.0 if mode == "top" else -1.0
    for selection in ("topk", "quantile"):
        for rho in (0.01, 0.2, 0.6):
            assert tm._local_select(x.float(), m, int(m.sum()), sign, selection, rho) is not None
            fast = select_tokens(x.view(1, n), m.view(1, n), mode, rho, selection)
            with monkeypatch.context() as mp_:
                mp_.setattr(tm, "_FAST_ABOVE", 1 << 40)
                plain = select_tokens(x.view(1, n), m.view(1, n), mode, rho, selection)
            assert torch.equal(fast.mask, plain.mask), (selection, rho)
            assert (fast.threshold, fast.n_tokens, fast.n_selected) == (plain.threshold, plain.n_tokens,
                                                                        plain.n_selected)
