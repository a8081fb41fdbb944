"""The equivalence suite: files of (category, gold, answer, expected verdict) cases scored through the whole
checker, with false-negative and false-positive rates.

    python -m harness.core.cases tests/fixtures/equivalence/cases.tsv [MORE.tsv ...]

A case file is UTF-8 text, one case per line, four tab-separated columns: a category (any word, for the
per-category table), the gold, the answer (the content of the response's last `\\boxed{}`; the response scored is
`The answer is $\\boxed{answer}$.`), and 1 (equivalent) or 0 (not). Lines starting with `#` and blank lines are
skipped. The exit status is 1 on any false positive or on 2% false negatives or more.
"""
from __future__ import annotations

from collections import Counter

from harness.core.scoring import score_math


def read_cases(path) -> list[tuple[str, str, str, bool]]:
    """(category, gold, answer, expected) rows of a TSV file: category, gold, answer (the content of the last
    \\boxed{}), expected (1 or 0); lines starting with # and blank lines are skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 4 or parts[3].strip() not in ("0", "1"):
                raise ValueError(f"{path}:{n}: need 4 tab-separated columns (category, gold, answer, 0/1), "
                                 f"got {len(parts)}: {line[:80]!r}")
            rows.append((parts[0].strip(), parts[1], parts[2], parts[3].strip() == "1"))
    return rows


def run_cases(paths, workers: int | None = None, timeout_s: float = 5.0, out=print) -> dict:
    """Score every case through the whole checker (`score_math` on `\\boxed{answer}`); print a table per category,
    each false negative / false positive, and the rates. Returns the counts."""
    rows = [r for p in paths for r in read_cases(p)]
    scores = score_math([f"The answer is $\\boxed{{{a}}}$." for _, _, a, _ in rows], [g for _, g, _, _ in rows],
                        timeout_s=timeout_s, workers=workers)
    per = Counter()
    wrong = []
    for (cat, g, a, exp), s in zip(rows, scores):
        per[(cat, exp, s.correct)] += 1
        if s.correct != exp:
            wrong.append(("FN" if exp else "FP", cat, g, a, s.status, s.reason))
    pos = sum(1 for r in rows if r[3])
    neg = len(rows) - pos
    fn = sum(1 for w in wrong if w[0] == "FN")
    fp = len(wrong) - fn
    out(f"{'category':14s} {'cases':>6s} {'FN':>4s} {'FP':>4s}")
    for cat in sorted({r[0] for r in rows}):
        n = sum(v for (c, _, _), v in per.items() if c == cat)
        out(f"{cat:14s} {n:6d} {per[(cat, True, False)]:4d} {per[(cat, False, True)]:4d}")
    for kind, cat, g, a, status, reason in wrong:
        out(f"{kind} [{cat}] gold {g!r} answer {a!r} ({status}{': ' + reason if reason else ''})")
    out(f"{len(rows)} cases: {pos} equivalent, {neg} not; false negatives {fn}/{pos} = {100 * fn / max(pos, 1):.2f}%, "
        f"false positives {fp}/{neg} = {100 * fp / max(neg, 1):.2f}%")
    return {"cases": len(rows), "positives": pos, "negatives": neg, "false_negatives": fn, "false_positives": fp}


if __name__ == "__main__":  # python -m harness.core.cases CASES.tsv [...]: exit 1 on any FP or FN >= 2%
    import sys

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m harness.core.cases CASES.tsv [CASES.tsv ...]")
    r = run_cases(sys.argv[1:])
    raise SystemExit(0 if r["false_positives"] == 0 and r["false_negatives"] < 0.02 * r["positives"] else 1)
