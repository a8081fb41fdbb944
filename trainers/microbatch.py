"""Token-budget micro-batches: which rows of a per-rank mini-batch share one mask pool and one token mean (pure).

The released code (github.com/Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR at 6f5dda6f, a patch of verl) trains with
`use_dynamic_bsz=True`: each rank's mini-batch is cut into `ceil(tokens / budget)` micro-batches (the count is
the maximum over ranks, at most the number of rows) whose token sums are balanced by the Karmarkar-Karp largest
differencing method (`verl/utils/seqlen_balancing.py`: `rearrange_micro_batches`, `get_seqlen_balanced_partitions`,
`karmarkar_karp` with `equal_size=False`); the micro-batches are then ordered by the sum of squared lengths,
largest first. `verl/workers/actor/dp_actor.py` (`update_policy`) computes the entropy mask and the token mean per
micro-batch and weights each micro-batch loss by its rows / the mini-batch rows.

This module reproduces that partition exactly, tie-breaking included (tests/test_microbatch.py), with its own code.
A row's length is its attention-mask sum: prompt plus response tokens, padding excluded, as in the released code.
"""
from __future__ import annotations

import heapq


def micro_batch_count(seqlens: list[int], max_tokens: int) -> int:
    """The number of token-budget micro-batches for one mini-batch on one rank before the cross-rank maximum:
    ceil(sum of lengths / max_tokens), at most the number of rows (released `rearrange_micro_batches`)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens}")
    if not seqlens:
        return 0
    return min(len(seqlens), -(-sum(seqlens) // max_tokens))


class _Part:
    """One growing partition: its sum and (index, length) items in insertion order."""
    __slots__ = ("total", "items")

    def __init__(self):
        self.total = 0
        self.items: list[tuple[int, int]] = []

    def key(self):  # the released order of partitions: sum, then item count, then the item list
        return self.total, len(self.items), self.items


class _State:
    """k partitions, kept sorted by `_Part.key`, largest first. A heap of states pops the largest spread first;
    equal spreads pop the state whose largest partition is larger first (the released tie-break)."""
    __slots__ = ("parts",)

    def __init__(self, k: int, index: int, length: int):
        self.parts = [_Part() for _ in range(k)]
        self.parts[0].total, self.parts[0].items = length, [(index, length)]

    def spread(self) -> int:
        return self.parts[0].total - self.parts[-1].total

    def __lt__(self, other: "_State") -> bool:
        a, b = self.spread(), other.spread()
        if a != b:
            return a > b
        return self.parts[0].key() > other.parts[0].key()

    def absorb(self, other: "_State") -> None:
        """Merge the largest partition of one state with the smallest of the other, and so on."""
        k = len(self.parts)
        for i in range(k):
            mine, theirs = self.parts[i], other.parts[k - 1 - i]
            mine.items += theirs.items
            mine.total += theirs.total
        self.parts.sort(key=_Part.key, reverse=True)


def balanced_partitions(seqlens: list[int], k: int) -> list[list[int]]:
    """Split row indices 0..n-1 into k non-empty groups with balanced length sums (Karmarkar-Karp, unequal group
    sizes), each group's indices ascending; the group order is the released one (largest sum first)."""
    n = len(seqlens)
    if not 1 <= k <= n:
        raise ValueError(f"cannot split {n} rows into {k} micro-batches (need 1 <= k <= rows)")
    heap = []
    for length, index in sorted((int(s), i) for i, s in enumerate(seqlens)):
        state = _State(k, index, length)
        state.parts.sort(key=_Part.key, reverse=True)
        heapq.heappush(heap, state)
    while len(heap) > 1:
        first, second = heapq.heappop(heap), heapq.heappop(heap)
        first.absorb(second)
        heapq.heappush(heap, first)
    groups = [sorted(i for i, _ in p.items) for p in heap[0].parts]
    if any(not g for g in groups):
        raise AssertionError("an empty micro-batch (cannot happen for k <= rows)")
    return groups


def token_budget_micro_batches(seqlens: list[int], count: int) -> list[list[int]]:
    """The released micro-batches of one mini-batch: `count` balanced groups (see `balanced_partitions`), ordered
    by the sum of squared lengths (then the smallest index), largest first, as `rearrange_micro_batches` does
    with `use_dynamic_bsz_balance=True`. `count` is `micro_batch_count` after the maximum over ranks."""
    groups = balanced_partitions(seqlens, count)
    groups.sort(key=lambda g: (sum(seqlens[i] ** 2 for i in g), min(g)), reverse=True)
    return groups
