"""Is an answer equivalent to the gold? `equivalent(answer, gold) -> bool` (raises `answers.Rejected`).

Both strings are put in one spelling (`answers.canonical`) and split into their structure (`answers.parse`);
structures are compared here, and single expressions ("atoms") last:

- text (`\\text{an ellipse}` vs `ellipse`): case, articles, brackets and punctuation ignored;
- several answers (`1, -2`, `x = 1 \\text{ or } x = -2`, `\\{1, -2\\}`, `1 \\pm \\sqrt 2`): the same answers in any
  order (a multiset); tuples `(a, b)`, `\\langle a, b \\rangle`, vectors and matrices: element by element in order
  (a column or row vector and a tuple of the same entries are equal);
- intervals, unions and inequalities in one variable (`x < 3` vs `(-\\infty, 3)`, `x \\in [-2, 7]`,
  `-2 \\le x \\le 7`, `x \\ne 1`, `|x| < 1`): the same intervals (union parts in any order), open/closed as written except at
  infinity; `(a, b)` is a tuple or an open interval, whichever the other side is;
- `x = 5` vs `5`, `f(x) = 2x` vs `2x` vs `f(t) = 2t` (assignments: the value counts); two equations that are
  not assignments (`5x - 7y + 11z + 4 = 0`) are equal when one is a non-zero multiple of the other;
- one trailing unit per value (`25\\%`, `90^\\circ`, `5\\text{ cm}`): 25% equals 25 and 0.25, 90 degrees equals 90
  (a radian value is not converted); two different units are different answers;
- atoms: plain numbers exactly (`fractions.Fraction`: large integers never go through floats); when either side
  is a decimal or in scientific notation the relative tolerance is `REL_TOL` (1e-4, as in the Qwen2.5-Math
  evaluation the benchmark copies come from), except that an integer gold needs an exact value;
  `52_8` equals `52` (same digits; the base is the question's); anything else is parsed by latex2sympy2_extended
  (math-verify's LaTeX parser) and compared numerically, never with `simplify`:
  constants at `PRECISION` digits, expressions in variables at `len(PROBES)` fixed points (mixed signs, so
  `\\sqrt{x^2}` is not `x`), both within `EXACT_TOL` relative (or `REL_TOL` when a decimal is involved); the
  variables must be the same. Derivatives, integrals, limits, infinite sums and unknown functions are compared
  as opaque symbols (equal only when written alike).

Before parsing (`answers.check_size`) and after it (`guard`, on the sympy tree, before anything is evaluated),
answers that would make sympy slow are refused (`Rejected`): too long, too deep, a value over 2**MAX_VALUE_BITS
(power towers, `(10^{10})!`, `\\Gamma(10^9)`, `\\binom{10^7}{5 \\cdot 10^6}`), a literal over
`MAX_FUNCTION_LITERAL` inside a factorial-like function (latex2sympy evaluates those while parsing), a sum or
product of more than `MAX_TERMS` terms, a matrix of more than `MAX_MATRIX_ENTRIES` entries inside an expression,
exponents nested more than `MAX_EXPONENT_DEPTH` deep, a tree of more than `MAX_NODES` nodes. Nothing is expanded
or simplified, so `(x+1)^{100000}` costs what evaluating it at a few points costs.

Deviation (stated): the paper names no checker, its released code compares strings (verl math_dapo);
math-verify's own `verify` is not used because it accepts what is not equal (decimals rounded to 6 places, so
`1.24e-8` equals `2.55e-10`; units stripped by name, so `\\frac{37}{4} m` equals `\\frac{37}{4}`) and rejects
what is (e-notation, `x < 3` vs `(-\\infty, 3)`). tests/fixtures/equivalence/cases.tsv holds the cases;
`python -m harness.core.cases FILE.tsv ...` prints the false-negative and false-positive rates of any such file.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

from harness.core.answers import (Rejected, based_numeral, canonical, check_size, is_text, number, parse,
                                  parse_item, split_top, split_unit, squeeze, text_key)

REL_TOL = 1e-4  # relative tolerance when a decimal or scientific-notation number is involved
EXACT_TOL = 1e-30  # relative tolerance of numeric identity between exact expressions (evaluated at PRECISION)
PRECISION = 50  # decimal digits of numeric evaluation
PROBES = ((0.5381, 0.117), (-0.7213, 0.1307), (1.3877, -0.2111), (2.1933, 0.0731), (-1.6517, 0.1931),
          (0.2749, 0.3313))  # variable j takes a + b*j at each point
MIN_PROBES = 3  # points where both sides must be finite and agree
MAX_VALUE_BITS = 100_000  # a value that may exceed 2**this is not evaluated
MAX_FUNCTION_LITERAL = 10_000  # an integer literal above this inside \binom, \Gamma, ! is refused before parsing
MAX_TERMS = 1_000  # a finite sum or product over more terms is refused
MAX_MATRIX_ENTRIES = 16  # a matrix inside an expression (\det, powers) with more entries is refused
MAX_EXPONENT_DEPTH = 3  # x^{x^{x^{x}}} with variables: deeper towers are refused
MAX_NODES = 600  # sympy tree nodes per answer
MAX_ATOM_TOKENS = 160  # symbols (commands, letters, numbers, signs) in one expression sent to the parser; the
#                        longest benchmark gold expression has 91 (parsing cost grows with length and ambiguity)


# ---------------------------------------------------------------- entry point

def equivalent(answer: str, gold: str) -> bool:
    """True when `answer` is an equivalent form of `gold` (see the module docstring). Raises Rejected."""
    check_size(answer)
    a, g = canonical(answer), canonical(gold)
    if not a or not g:
        return False
    if squeeze(a) == squeeze(g):
        return True
    return nodes_equal(parse(a), parse(g))


# ---------------------------------------------------------------- structures

_TUPLE_LHS = re.compile(r"^\(\s*[A-Za-z](?:_\{?\w+\}?)?(?:\s*,\s*[A-Za-z](?:_\{?\w+\}?)?)+\s*\)$")
_SIMPLE_VAR = re.compile(r"^(?:[A-Za-z]|\\[a-zA-Z]+|\\text\{[A-Za-z]\})(?:_\{?[\w\\ ]+\}?)?(?:\^\{\\prime+\})?$")
_FUNC_LHS = re.compile(r"^([A-Za-z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\(\s*([A-Za-z])\s*\)$")
_INEQ = {"<", ">", "\\le", "\\ge"}
_ABS_VAR = re.compile(r"^\|\s*[A-Za-z](?:_\{?\w+\}?)?\s*\|$")


def _raw(node) -> str:
    kind = node[0]
    if kind in ("atom", "text"):
        return node[1]
    if kind == "rel":
        return " ".join(node[1])
    if kind == "matrix":
        return " \\\\ ".join(" & ".join(r) for r in node[1])
    items = node[-1]
    inner = ",".join(_raw(x) for x in items)
    if kind == "bracket":
        return node[1] + inner + node[2]
    return inner


def _is_simple_lhs(s: str) -> bool:
    """A name a value is given to: x, x_1, E_{2}, \\alpha, f(x), (x, y), \\angle ABC."""
    s = s.strip()
    if s in ("\\infty", "\\pi"):
        return False
    if re.match(r"^\\(?:angle|measuredangle)(?![a-zA-Z])\s*[A-Za-z\s_{}\d]*$", s):
        return True
    return bool(_SIMPLE_VAR.match(s) or _FUNC_LHS.match(s) or _TUPLE_LHS.match(s))


def _is_constant(s: str) -> bool:
    """No variable in it (commands such as \\frac, \\pi, \\sqrt and \\text units do not count)."""
    s = re.sub(r"\\text\{[^{}]*\}|\\[a-zA-Z]+", "", s)
    return not re.search(r"[A-Za-z]", s)


def _single(node):
    """A one-element list/set stands for its element."""
    if node[0] in ("list", "set") and len(node[1]) == 1:
        return node[1][0]
    return node


def _unwrap_membership(node):
    """`x \\in S` -> S (the answer names the set)."""
    if node[0] == "rel" and len(node[1]) == 3 and node[1][1] == "\\in" and _is_simple_lhs(node[1][0]):
        return parse_item(node[1][2])
    return node


def nodes_equal(a, g) -> bool:
    a, g = _single(_unwrap_membership(a)), _single(_unwrap_membership(g))
    if a[0] == "rel" and g[0] != "rel":
        ops, parts = a[1][1::2], a[1][0::2]
        if all(op == "=" for op in ops) and (_is_simple_lhs(parts[0]) or all(_is_constant(p) for p in parts)):
            a = _single(parse_item(parts[-1]))  # x = 5, (x, y) = (1, 2), 2 + 3 = 5: the value written last
    if g[0] == "text":
        return text_key(_raw(a)) == text_key(g[1])
    if a[0] == "text":
        a = ("atom", re.sub(r"\\text\{([^{}]*)\}", r"\1", a[1]).strip())
    ia, ig = _interval_like(a), _interval_like(g)
    if (ig == "yes" and ia in ("yes", "maybe")) or (ia == "yes" and ig == "maybe"):
        x, y = intervals(a), intervals(g)
        return x is not None and y is not None and intervals_equal(x, y)
    if ig == "yes" or ia == "yes":
        return False
    if g[0] in ("list", "set"):
        items = a[1] if a[0] in ("list", "set") else a[3] if a[0] == "bracket" and a[1] == "(" else None
        return items is not None and multiset_equal(list(items), list(g[1]))
    if g[0] in ("bracket", "tuple", "matrix"):
        return sequence_equal(a, g)  # a bare list counts in its order: 1, 2 for (1, 2)
    if a[0] in ("list", "set"):
        return False  # several answers for one: never forgiven
    if g[0] == "rel":
        return relation_equal(a, g)
    if g[0] == "union":
        return False
    # the gold is an atom
    if a[0] != "atom":
        return False
    return atom_equal(a[1], g[1])


def multiset_equal(items_a: list, items_g: list) -> bool:
    """Same answers in any order (each gold answer matched by its own answer)."""
    if len(items_a) != len(items_g):
        return False
    unused = list(range(len(items_a)))
    for g in items_g:
        for j in unused:
            if nodes_equal(items_a[j], g):
                unused.remove(j)
                break
        else:
            return False
    return True


def _sequence(node):
    """(shape, cells as nodes) of a tuple-like node; vectors have shape (n,)."""
    kind = node[0]
    if kind == "bracket":
        return (len(node[3]),), list(node[3])
    if kind == "list":  # 1, 2 for the tuple (1, 2): in order
        return (len(node[1]),), list(node[1])
    if kind == "tuple":
        return (len(node[1]),), list(node[1])
    if kind == "matrix":
        rows = node[1]
        cells = [parse_item(c) for r in rows for c in r]
        if len(rows) == 1 or all(len(r) == 1 for r in rows):
            return (len(cells),), cells
        if len({len(r) for r in rows}) != 1:
            return None, None
        return (len(rows), len(rows[0])), cells
    return None, None


def sequence_equal(a, g) -> bool:
    sa, ca = _sequence(a)
    sg, cg = _sequence(g)
    if sa is None or sa != sg:
        return False
    return all(nodes_equal(x, y) for x, y in zip(ca, cg))


def relation_equal(a, g) -> bool:
    """Gold is a relation chain that is not an interval: an assignment (x = 5, f(x) = 2x) or an equation."""
    gparts, gops = g[1][0::2], g[1][1::2]
    if not all(op == "=" for op in gops):
        return a[0] == "rel" and squeeze(_raw(a)) == squeeze(_raw(g))
    glhs, grhs = gparts[0], gparts[-1]
    if _is_simple_lhs(glhs):
        if a[0] == "rel" and all(op == "=" for op in a[1][1::2]):
            alhs, arhs = a[1][0], a[1][-1]
            if not _is_simple_lhs(alhs):
                return _equations_equal(alhs, arhs, glhs, grhs)
            if squeeze(alhs) == squeeze(glhs):
                return nodes_equal(parse_item(arhs), parse_item(grhs))
            fa, fg = _FUNC_LHS.match(alhs.strip()), _FUNC_LHS.match(glhs.strip())
            if fa and fg and fa.group(1) == fg.group(1):  # f(t) = 2t is f(x) = 2x
                renamed = re.sub(rf"(?<![\\a-zA-Z]){fa.group(2)}(?![a-zA-Z])", fg.group(2), arhs)
                return nodes_equal(parse_item(renamed), parse_item(grhs))
            return False
        return nodes_equal(a, parse_item(grhs))
    if a[0] == "rel" and all(op == "=" for op in a[1][1::2]) and len(a[1]) == 3 and len(gparts) == 2:
        return _equations_equal(a[1][0], a[1][2], glhs, grhs)
    return False


# ---------------------------------------------------------------- intervals

_INF = {"\\infty", "+\\infty", "\\infty^{+}"}
_NINF = {"-\\infty"}


def _interval_like(node) -> str:
    """"yes" (only an interval reading), "maybe" ((a, b): tuple or open interval), or "no"."""
    kind = node[0]
    if kind == "bracket" and len(node[3]) == 2:
        return "maybe" if (node[1], node[2]) == ("(", ")") else "yes"
    if kind == "union":
        return "yes"
    if kind == "rel":
        ops = node[1][1::2]
        if ops and all(op in _INEQ for op in ops) or ops == ["\\ne"] or (ops == ["\\in"]):
            return "yes" if intervals(node) is not None else "no"
    if kind == "atom" and squeeze(node[1]) in ("\\mathbb{R}", "\\mathbbR", "\\emptyset"):
        return "yes"
    if kind == "list" and node[1] and all(_interval_like(x) == "yes" for x in node[1]):
        return "yes"
    return "no"


def intervals(node):
    """[(lo, lo_closed, hi, hi_closed), ...] (strings) for an interval-like node, else None."""
    kind = node[0]
    if kind == "bracket" and len(node[3]) == 2:
        lo, hi = _raw(node[3][0]), _raw(node[3][1])
        return [(lo, node[1] == "[", hi, node[2] == "]")]
    if kind in ("union", "list"):
        out = []
        for part in node[1]:
            x = intervals(part)
            if x is None:
                return None
            out += x
        return out
    if kind == "set":
        return [(_raw(x), True, _raw(x), True) for x in node[1]]
    if kind == "atom":
        s = squeeze(node[1])
        if s in ("\\mathbb{R}", "\\mathbbR"):
            return [("-\\infty", False, "\\infty", False)]
        if s == "\\emptyset":
            return []
        return None
    if kind != "rel":
        return None
    parts, ops = node[1][0::2], node[1][1::2]
    if ops == ["\\in"] and _is_simple_lhs(parts[0]):
        return intervals(parse_item(parts[1]))
    if ops == ["\\ne"] and _is_simple_lhs(parts[0]):
        return [("-\\infty", False, parts[1], False), (parts[1], False, "\\infty", False)]
    if not ops or not all(op in _INEQ for op in ops):
        return None
    m = _ABS_VAR.match(parts[0])
    if len(ops) == 1 and m and _is_constant(parts[1]):  # |x| < a, |x| >= a
        a, op = parts[1], ops[0]
        if op in ("<", "\\le"):
            return [(f"-({a})", op == "\\le", a, op == "\\le")]
        return [("-\\infty", False, f"-({a})", op == "\\ge"), (a, op == "\\ge", "\\infty", False)]
    var = [i for i, p in enumerate(parts) if _is_simple_lhs(p) and number(p) is None]
    if len(var) != 1 or len(parts) > 3:
        return None
    v = var[0]
    lo, lo_c, hi, hi_c = "-\\infty", False, "\\infty", False
    for i, op in enumerate(ops):  # parts[i] op parts[i+1]
        left, right = i, i + 1
        if op in ("<", "\\le"):
            if right == v:
                lo, lo_c = parts[left], op == "\\le"
            elif left == v:
                hi, hi_c = parts[right], op == "\\le"
            else:
                return None
        else:  # > or \ge
            if right == v:
                hi, hi_c = parts[left], op == "\\ge"
            elif left == v:
                lo, lo_c = parts[right], op == "\\ge"
            else:
                return None
    return [(lo, lo_c, hi, hi_c)]


def _endpoint_key(s: str) -> float:
    sq = squeeze(s)
    if sq in _NINF:
        return -math.inf
    if sq in _INF:
        return math.inf
    try:
        v = _constant_value(s)
    except (TypeError, ValueError, AttributeError):  # not a real number: sorted by text below
        v = None
    return math.nan if v is None else v


def intervals_equal(a: list, g: list) -> bool:
    if len(a) != len(g):
        return False

    def ordered(xs):
        keyed = [(_endpoint_key(lo), _endpoint_key(hi), squeeze(lo), x) for x in xs for lo, hi in [(x[0], x[2])]]
        return [k[3] for k in sorted(keyed, key=lambda k: (k[0] if k[0] == k[0] else 0.0, k[2]))]

    for (alo, alc, ahi, ahc), (glo, glc, ghi, ghc) in zip(ordered(a), ordered(g)):
        for x, xc, y, yc in ((alo, alc, glo, glc), (ahi, ahc, ghi, ghc)):
            infinite = squeeze(y) in _INF | _NINF
            if infinite:
                if squeeze(x) not in _INF | _NINF or (squeeze(x) in _NINF) != (squeeze(y) in _NINF):
                    return False
                continue
            if xc != yc or not atom_equal(x, y):
                return False
    return True


# ---------------------------------------------------------------- atoms

def atom_equal(a: str, g: str) -> bool:
    """One expression against one gold expression, with at most one unit each (see the module docstring)."""
    ga, gu = split_unit(g)
    aa, au = split_unit(a)
    if au is not None and gu is None and au not in ("%", "deg") and len(au.split("^")[0]) == 1 \
            and re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", ga)):
        aa, au = a, None  # "5 m" against a gold with variables: m is a variable, not metres
    if au is not None and gu is not None and au != gu and "%" not in (au, gu):
        return False
    if "%" in (au, gu) and au not in ("%", None) or gu not in ("%", None) and au == "%":
        return False
    pa, pg = au == "%", gu == "%"
    if not aa or not ga:
        return False
    if squeeze(aa) == squeeze(ga):
        return True
    na, ng = number(aa), number(ga)
    if na is not None and ng is not None:
        return _numbers_equal(na, ng, pa, pg)
    ba, bg = based_numeral(aa), based_numeral(ga)
    if ba or bg:
        da = ba[0] if ba else (str(na[0]) if na and not na[1] and na[0].denominator == 1 else None)
        dg = bg[0] if bg else (str(ng[0]) if ng and not ng[1] and ng[0].denominator == 1 else None)
        same_base = not (ba and bg) or ba[1] == bg[1]
        return da is not None and da == dg and same_base
    return _expressions_equal(aa, ga, pa, pg)


def _numbers_equal(a: tuple[Fraction, bool], g: tuple[Fraction, bool], pa: bool, pg: bool) -> bool:
    (x, ax), (y, gx) = a, g
    if pa != pg:  # one side a percentage: 25% is 25 and 0.25
        if pa:
            return _close(x, y, ax, gx) or _close(x / 100, y, ax, gx)
        return _close(x, y, ax, gx) or _close(x, y / 100, ax, gx)
    return _close(x, y, ax, gx)


def _close(x: Fraction, y: Fraction, approx_a: bool, approx_g: bool) -> bool:
    """Answer x against gold y: exact, or within REL_TOL when a decimal is involved (an exact integer gold needs an
    exact value)."""
    if x == y:
        return True
    if not (approx_a or approx_g) or (not approx_g and y.denominator == 1):
        return False
    return abs(x - y) <= Fraction(REL_TOL) * abs(y)


# ---------------------------------------------------------------- sympy

_TOKEN_RE = re.compile(r"\\[a-zA-Z]+|[a-zA-Z]|\d+|[^\s\w]")
_FUNCTION_LITERAL_RE = re.compile(r"\\(?:binom|Gamma|choose)(?![a-zA-Z])|!")
_INT_LITERAL_RE = re.compile(r"\d+")
_TEXT_GROUP_RE = re.compile(r"\\text\{[^{}]*\}")
_BARE_E_RE = re.compile(r"(?<![\\a-zA-Z])E(?![a-zA-Z])")


def _latex_for_parser(s: str) -> str:
    """latex2sympy reads a capital E as an exponent marker: a bare E (a variable) becomes \\text{E}."""
    out, last = [], 0
    for m in _TEXT_GROUP_RE.finditer(s):
        out += [_BARE_E_RE.sub(r"\\text{E}", s[last:m.start()]), m.group(0)]
        last = m.end()
    out.append(_BARE_E_RE.sub(r"\\text{E}", s[last:]))
    return "".join(out)


def to_sympy(s: str):
    """The sympy value of one canonical atom, guarded and prepared for numeric comparison; None if it does not
    parse. Raises Rejected (see the module docstring). Cached per process, refusals included."""
    value, refused = _to_sympy(s)
    if refused:
        raise Rejected(refused)
    return value


@lru_cache(maxsize=4096)
def _to_sympy(s: str):
    try:
        return _parse_guarded(s), None
    except Rejected as e:
        return None, str(e)


def _parse_guarded(s: str):
    import sympy
    from latex2sympy2_extended.latex2sympy2 import ConversionConfig, latex2sympy

    tokens = len(_TOKEN_RE.findall(s))
    if tokens > MAX_ATOM_TOKENS:
        raise Rejected(f"expression of {tokens} symbols (limit {MAX_ATOM_TOKENS})")
    if _FUNCTION_LITERAL_RE.search(s) and any(len(m.group(0)) > 5 or int(m.group(0)) > MAX_FUNCTION_LITERAL
                                              for m in _INT_LITERAL_RE.finditer(s)):
        raise Rejected(f"a number over {MAX_FUNCTION_LITERAL} with a factorial, \\binom or \\Gamma")
    try:
        expr = latex2sympy(_latex_for_parser(s), is_real=None, normalization_config=None,
                           conversion_config=ConversionConfig(lowercase_symbols=False))
    except Rejected:
        raise
    except Exception:  # noqa: BLE001 - latex2sympy raises many types on what it cannot read: not an answer
        return None
    if isinstance(expr, (list, tuple)) or not isinstance(expr, (sympy.Basic, sympy.MatrixBase)):
        return None
    if isinstance(expr, sympy.MatrixBase):
        if expr.rows * expr.cols > MAX_MATRIX_ENTRIES:
            raise Rejected(f"matrix of more than {MAX_MATRIX_ENTRIES} entries")
        return expr
    guard(expr)
    return _prepare(expr)


def _count_nodes(expr) -> int:
    import sympy

    n = 0
    for _ in sympy.preorder_traversal(expr):
        n += 1
        if n > MAX_NODES:
            raise Rejected(f"expression of more than {MAX_NODES} nodes")
    return n


def guard(expr) -> None:
    """Raise Rejected for a tree that sympy would be slow to evaluate (nothing is evaluated here)."""
    import sympy

    _count_nodes(expr)
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.MatrixBase) and node.rows * node.cols > MAX_MATRIX_ENTRIES:
            raise Rejected(f"matrix of more than {MAX_MATRIX_ENTRIES} entries")
        if isinstance(node, (sympy.Sum, sympy.Product)):
            for limit in node.limits:
                if len(limit) == 3 and limit[1].is_number and limit[2].is_number:
                    lo, hi = value_bits(limit[1]), value_bits(limit[2])
                    if max(lo, hi) > 64:
                        raise Rejected(f"a sum or product over more than {MAX_TERMS} terms")
                    span = sympy.N(limit[2] - limit[1])
                    if span.is_finite is False or (span.is_number and abs(span) > MAX_TERMS):
                        raise Rejected(f"a sum or product over more than {MAX_TERMS} terms")
        if isinstance(node, sympy.Pow) and _exponent_depth(node) > MAX_EXPONENT_DEPTH:
            raise Rejected(f"exponents nested more than {MAX_EXPONENT_DEPTH} deep")
    if value_bits(expr) > MAX_VALUE_BITS:
        raise Rejected(f"a value that may exceed 2^{MAX_VALUE_BITS}")


def _exponent_depth(e) -> int:
    import sympy

    if isinstance(e, sympy.Pow):
        return 1 + _exponent_depth(e.exp)
    if isinstance(e, sympy.exp):
        return 1 + _exponent_depth(e.args[0])
    if isinstance(e, sympy.Basic) and e.args:
        return max(_exponent_depth(a) for a in e.args)
    return 0


def value_bits(e) -> float:
    """An upper bound of log2|value| of a sympy expression from its tree, without evaluating it (inf when over
    2**60 bits). Symbols count as 0 bits: only numeric growth is bounded."""
    import sympy

    if isinstance(e, sympy.Integer):
        return float(abs(int(e)).bit_length())
    if isinstance(e, sympy.Rational):
        return float(max(abs(e.p).bit_length(), e.q.bit_length()))
    if isinstance(e, sympy.Float):
        return float(max(abs(e._mpf_[2] + e._mpf_[3]), 64)) if e._mpf_[1] else 0.0
    if isinstance(e, sympy.Number) or not isinstance(e, sympy.Basic) or not e.args:
        return 64.0 if isinstance(e, sympy.Number) else 0.0
    if isinstance(e, (sympy.Pow, sympy.exp)):
        base, ex = (e.base, e.exp) if isinstance(e, sympy.Pow) else (sympy.E, e.args[0])
        x = value_bits(ex)
        if x > 60:
            return math.inf
        b = value_bits(base)
        if base.free_symbols or ex.free_symbols:
            return b + x + 1  # stays symbolic; evaluated only at small probe values
        return max(b, 2.0) * 2.0 ** x
    if isinstance(e, (sympy.factorial, sympy.gamma, sympy.factorial2, sympy.RisingFactorial,
                      sympy.FallingFactorial, sympy.subfactorial)):
        x = max(value_bits(a) for a in e.args)
        return math.inf if x > 60 else 2.0 ** x * (x + 1)
    if isinstance(e, sympy.binomial):
        x = value_bits(e.args[0])
        return math.inf if x > 60 else 2.0 ** x + 1
    if isinstance(e, (sympy.Sum, sympy.Product)):
        body = value_bits(e.function)
        return math.inf if body == math.inf else body * (MAX_TERMS + 1) + 1
    return sum(value_bits(a) for a in e.args) + 1.0


def _prepare(expr):
    """Symbols i -> the imaginary unit; derivatives, integrals, limits, unknown functions, sums without numeric
    bounds -> opaque symbols named by their text; finite sums and products and integer functions evaluated."""
    import sympy
    from sympy.core.function import AppliedUndef

    def opaque(node):
        return sympy.Symbol("\u27e6" + sympy.srepr(node) + "\u27e7")

    repl = {}
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, (sympy.Derivative, sympy.Integral, sympy.Limit, AppliedUndef)):
            repl[node] = opaque(node)
        elif isinstance(node, (sympy.Sum, sympy.Product)) and not all(
                len(lim) == 3 and lim[1].is_number and lim[2].is_number for lim in node.limits):
            repl[node] = opaque(node)
    if repl:
        expr = expr.xreplace(repl)
    names = {s.name: s for s in expr.free_symbols}
    subs = {names[n]: sympy.I for n in ("i", "imath") if n in names}
    if subs:
        expr = expr.xreplace(subs)
    try:
        expr = expr.doit()
    except Exception:  # noqa: BLE001 - keep the unevaluated tree
        pass
    return expr


def _constant_value(s: str) -> float | None:
    """The real value of a constant atom (for ordering interval endpoints), None if not a real constant."""
    n = number(s)
    if n is not None:
        return float(n[0])
    e = to_sympy(s)
    if e is None or getattr(e, "free_symbols", True):
        return None
    v = complex(e.evalf(20))
    return v.real if abs(v.imag) < 1e-12 else None


def _expressions_equal(a: str, g: str, pa: bool, pg: bool) -> bool:
    import sympy

    ea, eg = to_sympy(a), to_sympy(g)
    if ea is None or eg is None:
        return False
    if isinstance(ea, sympy.MatrixBase) or isinstance(eg, sympy.MatrixBase):
        return isinstance(ea, sympy.MatrixBase) and isinstance(eg, sympy.MatrixBase) and ea.shape == eg.shape \
            and all(_values_equal(x, y) for x, y in zip(ea, eg))
    if not isinstance(ea, sympy.Expr) or not isinstance(eg, sympy.Expr):
        return ea == eg  # sets, relations, tuples that reached here: structural equality only
    if pa != pg:
        return _values_equal(ea, eg) or (_values_equal(ea / 100, eg) if pa else _values_equal(ea, eg / 100))
    return _values_equal(ea, eg)


def _has_float(e) -> bool:
    import sympy

    return any(isinstance(x, sympy.Float) for x in sympy.preorder_traversal(e))


def _probe_points(symbols) -> list[dict]:
    import sympy

    order = sorted(symbols, key=lambda s: s.name)
    return [{s: sympy.Float(a + b * j, PRECISION) for j, s in enumerate(order)} for a, b in PROBES]


def _evaluate(e, point: dict) -> complex | None:
    """e at a point (a dict symbol -> Float), as a complex number; None when not finite or not a number."""
    try:
        v = e.xreplace(point).evalf(PRECISION) if point else e.evalf(PRECISION)
        z = complex(v)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
        return None
    if not (math.isfinite(z.real) and math.isfinite(z.imag)):
        return None
    return z


def _values_equal(ea, eg) -> bool:
    """Numeric identity of two sympy expressions (constants, or functions of the same variables)."""
    import sympy

    if ea == eg:
        return True
    approx = _has_float(ea) or _has_float(eg)
    names = {s.name for s in ea.free_symbols} | {s.name for s in eg.free_symbols}
    if not names:
        if isinstance(ea, sympy.Rational) and isinstance(eg, sympy.Rational):
            if not approx:
                return False
        if approx and isinstance(eg, sympy.Integer) and not _has_float(eg):
            return bool(sympy.Eq(ea, eg)) if isinstance(ea, sympy.Number) else False
        va, vg = _evaluate(ea, {}), _evaluate(eg, {})
        return va is not None and vg is not None and _agree(va, vg, approx)
    # the union of the variables: a variable on one side only must cancel (x - x + 7 is 7; 2k is not 2n)
    by_name = {s.name: s for s in [*eg.free_symbols, *ea.free_symbols]}
    ea = ea.xreplace({s: by_name[s.name] for s in ea.free_symbols})
    eg = eg.xreplace({s: by_name[s.name] for s in eg.free_symbols})
    agreed = 0
    for point in _probe_points(by_name.values()):
        va, vg = _evaluate(ea, point), _evaluate(eg, point)
        if va is None and vg is None:
            continue
        if va is None or vg is None or not _agree(va, vg, approx):
            return False
        agreed += 1
    return agreed >= MIN_PROBES


def _agree(x: complex, y: complex, approx: bool) -> bool:
    tol = REL_TOL if approx else EXACT_TOL
    return abs(x - y) <= tol * max(abs(x), abs(y)) or (x == 0 and y == 0)


def _equations_equal(alhs: str, arhs: str, glhs: str, grhs: str) -> bool:
    """Two equations lhs = rhs are equal when (lhs - rhs) of one is a non-zero constant times the other's."""
    import sympy

    parts = [to_sympy(x) for x in (alhs, arhs, glhs, grhs)]
    if any(p is None or not isinstance(p, sympy.Expr) for p in parts):
        return False
    da, dg = parts[0] - parts[1], parts[2] - parts[3]
    if {s.name for s in da.free_symbols} != {s.name for s in dg.free_symbols} or not dg.free_symbols:
        return False
    by_name = {s.name: s for s in dg.free_symbols}
    da = da.xreplace({s: by_name[s.name] for s in da.free_symbols})
    approx = _has_float(da) or _has_float(dg)
    ratio, agreed = None, 0
    for point in _probe_points(dg.free_symbols):
        va, vg = _evaluate(da, point), _evaluate(dg, point)
        if va is None or vg is None or abs(vg) < 1e-20:
            continue
        r = va / vg
        if abs(r) < 1e-20:
            return False
        if ratio is None:
            ratio = r
        elif not _agree(r, ratio, approx):
            return False
        agreed += 1
    return agreed >= MIN_PROBES
