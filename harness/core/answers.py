"""Answer strings (pure, no sympy): size guards, one canonical LaTeX spelling, and the structure of an answer.

`canonical(s)` rewrites the presentation of an answer into one spelling, never its value: Unicode signs to LaTeX
(`×` `·` `−` `°` `≤` `π` `√` superscript digits ...), `$`, `\\left`/`\\right`, spacing commands, `\\dfrac`,
e-notation (`4.5e33`, `1E-5`) to `4.5\\times10^{33}`, `10^33` to `10^{33}`, `\\frac43` to `\\frac{4}{3}`,
`\\sqrt2` to `\\sqrt{2}`, thousands separators (`10,\\!080`, `1{,}000`, and a whole answer `1,000`), primes,
`np.arcsin` (a Minerva gold) to `\\arcsin`, `-1./3` to `-1/3`, `\\text{ or }` to a list comma.

`parse(s)` splits a canonical answer into nodes (tuples, never evaluated):
  ("list", [node, ...])          answers separated by top-level commas, `;`, "or", "and": unordered
  ("set", [node, ...])           `\\{a, b\\}` and `a \\pm b`: unordered
  ("bracket", "(", ")", [node])  `(a, b)`, `[a, b)`, ...: a tuple, or an interval when two items (equality decides)
  ("tuple", [node, ...])         `\\langle a, b \\rangle`
  ("matrix", [[str, ...], ...])  pmatrix / bmatrix / matrix rows of cells
  ("union", [node, ...])         `A \\cup B`
  ("rel", [str, op, str, ...])   a chain of `=`, `<`, `>`, `\\le`, `\\ge`, `\\ne`, `\\in` (operands as strings)
  ("text", str)                  a whole `\\text{...}` answer (or plain words)
  ("atom", str)                  anything else: one mathematical expression, checked by harness.core.equivalence

`split_unit(atom)` takes one trailing unit off an atom: a percent sign, a degree sign, a `\\text{ cm}^2`-style
unit, or a known unit word (`45 minutes`). Only ONE sign, and only right after a value: `\\%` repeated before a
number is not a unit and stays in the answer (which then does not parse).

`number(atom)` reads plain numbers exactly (`fractions.Fraction`): integers of any size, decimals, e-notation and
`a\\times10^{n}`, `\\frac{a}{b}`, `a/b`, mixed numbers `1\\frac{4}{5}`, repeating decimals `0.\\overline{3}`;
decimals and scientific notation are marked
approximate (their tolerance is decided by the caller).

`check_size(s)` raises `Rejected` before any parsing for what no benchmark answer looks like and what makes a
parser or a computer algebra system slow: over `MAX_CHARS` characters, brackets nested deeper than `MAX_DEPTH`,
more than `MAX_SUPERSCRIPTS` superscripts, TeX programming commands (`\\def`, `\\expandafter`, ...).
"""
from __future__ import annotations

import re
from fractions import Fraction

MAX_CHARS = 2_000  # an answer longer than this is not checked (no benchmark gold exceeds 250)
MAX_DEPTH = 12  # bracket nesting ((, [, {, \{, \langle, \begin); the deepest benchmark gold has 4
MAX_SUPERSCRIPTS = 64  # `^` signs; the most in a benchmark gold is 7
MAX_ITEMS = 64  # answers in one list / tuple / matrix
MAX_EXPONENT = 1_000  # |n| in 1e{n} and a\times10^{n} read as plain numbers
TEX_PROGRAMMING = ("def", "edef", "gdef", "xdef", "let", "futurelet", "expandafter", "csname", "endcsname",
                   "newcommand", "renewcommand", "providecommand", "DeclareMathOperator", "loop", "repeat",
                   "input", "include", "catcode", "afterassignment", "aftergroup", "noexpand", "romannumeral",
                   "uppercase", "lowercase", "string", "meaning", "number", "the", "write", "read", "openin",
                   "immediate", "iftrue", "iffalse", "ifx", "ifnum", "else", "fi", "newif", "count", "advance")


class Rejected(ValueError):
    """An answer refused before parsing (too large, too deep, TeX programming): scored wrong, status "error"."""


# ---------------------------------------------------------------- guards

_COMMAND_RE = re.compile(r"\\([a-zA-Z]+)")
_TEX_PROGRAMMING = frozenset(TEX_PROGRAMMING)


def check_size(s: str) -> None:
    """Raise Rejected (with the reason) for an answer that is too large or too deeply nested to check."""
    if len(s) > MAX_CHARS:
        raise Rejected(f"answer of {len(s)} characters (limit {MAX_CHARS})")
    depth = 0
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise Rejected(f"brackets nested deeper than {MAX_DEPTH}")
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif c == "\\" and s.startswith("begin", i + 1):
            depth += 1
        elif c == "\\" and s.startswith("end", i + 1):
            depth = max(0, depth - 1)
        i += 1
    if s.count("^") > MAX_SUPERSCRIPTS:
        raise Rejected(f"{s.count('^')} superscripts (limit {MAX_SUPERSCRIPTS})")
    for m in _COMMAND_RE.finditer(s):
        if m.group(1) in _TEX_PROGRAMMING:
            raise Rejected(f"TeX programming command \\{m.group(1)}")


# ---------------------------------------------------------------- canonical spelling

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u22c5": "\\cdot ",
    "\u2219": "\\cdot ", "\u00f7": "\\div ", "\u00b0": "^\\circ ", "\u221e": "\\infty ", "\u03c0": "\\pi ",
    "\u221a": "\\sqrt", "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne ", "\u222a": "\\cup ",
    "\u2229": "\\cap ", "\u2208": "\\in ", "\u00b1": "\\pm ", "\u2213": "\\mp ", "\u2032": "'", "\u2033": "''",
    "\u2205": "\\emptyset ", "\u211d": "\\mathbb{R}", "\u2248": "\\approx ", "\u2217": "*", "\uff0c": ",",
    "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\u2002": " ", "\u2003": " ", "\u3000": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "",
}
_SUPERSCRIPTS = {"\u2070": "0", "\u00b9": "1", "\u00b2": "2", "\u00b3": "3", "\u2074": "4", "\u2075": "5",
                 "\u2076": "6", "\u2077": "7", "\u2078": "8", "\u2079": "9", "\u207b": "-", "\u207a": "+"}
_SUPERSCRIPT_RE = re.compile("[" + "".join(_SUPERSCRIPTS) + "]+")
_UNICODE_RE = re.compile("[" + "".join(_UNICODE) + "]")

_REMOVE_RE = re.compile(r"\\\$|(?<!\\)\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits|\(|\)|\[|\]|!)|\$")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|middle|[bB]igg?[lr]?)(?![a-zA-Z])\s*(\.)?")
_SPACE_CMD_RE = re.compile(r"(?<!\\)\\(?:[,;:> ]|(?:quad|qquad|enspace|thinspace|medspace|thickspace|hfill)(?![a-zA-Z]))|~"
                           r"|\\hspace\*?\{[^{}]*\}")
_TEXT_CMD_RE = re.compile(r"\\(?:text(?:bf|it|rm|normal|up|sf|tt)?|mbox|hbox|math(?:rm|bf|it|sf|tt|normal)"
                          r"|boldsymbol|bm|operatorname)\s*\{")
_RELATION_RE = [
    (re.compile(r"\\(?:leqslant|leq|le)(?![a-zA-Z])|<=|=<"), r"\\le "),
    (re.compile(r"\\(?:geqslant|geq|ge)(?![a-zA-Z])|>=|=>"), r"\\ge "),
    (re.compile(r"\\(?:neq|ne)(?![a-zA-Z])|!="), r"\\ne "),
    (re.compile(r"\\(?:lt)(?![a-zA-Z])"), "<"), (re.compile(r"\\(?:gt)(?![a-zA-Z])"), ">"),
]
_SIMPLE_SUBS = [
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"), (re.compile(r"\\[dt]binom(?![a-zA-Z])"), r"\\binom"),
    (re.compile(r"\\(?:lvert|rvert|vert)(?![a-zA-Z])"), "|"), (re.compile(r"\\(?:lbrace)(?![a-zA-Z])"), r"\\{"),
    (re.compile(r"\\(?:rbrace)(?![a-zA-Z])"), r"\\}"), (re.compile(r"\\lbrack(?![a-zA-Z])"), "["),
    (re.compile(r"\\rbrack(?![a-zA-Z])"), "]"), (re.compile(r"\\(?:varnothing)(?![a-zA-Z])"), r"\\emptyset"),
    (re.compile(r"\\infin(?![a-zA-Z])|(?<![\\a-zA-Z])infinity(?![a-zA-Z])"), r"\\infty"),
    (re.compile(r"\\(?:dots|ldots|cdots)(?![a-zA-Z])|\.\.\.|\u2026"), r"\\ldots"),
    (re.compile(r"\{\}\^"), "^"), (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\degree(?![a-zA-Z])"
                                              r"|(?<=[\d}])\s*\^\s*(?:\{\s*o\s*\}|o(?![a-zA-Z]))"), r"^\\circ"),
    (re.compile(r"\^\s*\\prime(?![a-zA-Z])"), r"^{\\prime}"),
    (re.compile(r"(?<![\w\\])(?:np|numpy|math|sympy)\.(?=[a-z])"), "\\\\"),  # np.arcsin(...) (a Minerva gold)
    (re.compile(r"\\(?:imath|mathrm\{i\})"), "i"), (re.compile(r"\\(?:tfrac|sfrac)(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\text\{\s*\\%\s*\}|\\text\{\s*percent\s*\}|(?<=[\d}])\s*percent(?![a-zA-Z])"), r"\\%"),
    (re.compile(r"(?<!\\)%"), r"\\%"),
    (re.compile(r"\\\$|\\text\{\s*\\\$\s*\}"), ""),  # currency sign
]
_E_NOTATION_RE = re.compile(r"(?<![\w.\\^_{])(\d+\.?\d*|\.\d+)[eE]([+-]?\d+)(?![\w.{^])")
_SCI_TIMES_RE = re.compile(r"\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^")
_BARE_EXPONENT_RE = re.compile(r"\^\s*([+-]?\d+(?:\.\d+)?)(?![\d.])")
_FRAC_DIGITS_RE = [
    (re.compile(r"\\frac\s*(\d)\s*(\d)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*(\d)\s*\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*([a-zA-Z])\s*([a-zA-Z\d])"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\sqrt\s*(\d)"), r"\\sqrt{\1}"),
    (re.compile(r"\\sqrt\s*([a-zA-Z])(?![a-zA-Z])"), r"\\sqrt{\1}"),
]
_THOUSANDS_MARK_RE = re.compile(r"(?<=\d)(?:,\\!\s*|\{,\}|,\\,|\\,(?=\d{3}(?!\d)))(?=\d{3}(?!\d))")
_WHOLE_THOUSANDS_RE = re.compile(r"^([+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?)(?:\s*\\text\{[^{}]*\}|\s*\\%|\^\\circ"
                                 r"|\s+[a-zA-Z]+)?$")
_TRAILING_DOT_RE = re.compile(r"(?<=\d)\.(?!\d|\\overline)")
_PRIME_RE = re.compile(r"(?<=[a-zA-Z)}])('+)")
_AND_OR_RE = re.compile(r"\\text\{\s*(?:and|or|,)\s*\}|(?<=[\s\d}])(?:and|or)(?=[\s\\\d(\[{-])")
_APPROX_RE = re.compile(r"\\(?:approx|simeq|sim)(?![a-zA-Z])")


def _unicode(s: str) -> str:
    s = _SUPERSCRIPT_RE.sub(lambda m: "^{" + "".join(_SUPERSCRIPTS[c] for c in m.group(0)) + "}", s)
    return _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)


def _text_groups(s: str):
    """(start, content start, end) of each top-level \\text{...} group (end: index after its closing brace)."""
    out = []
    for m in _TEXT_CMD_RE.finditer(s):
        if out and m.start() < out[-1][2]:
            continue
        depth, i = 1, m.end()
        while i < len(s) and depth:
            depth += {"{": 1, "}": -1}.get(s[i], 0)
            i += 1
        if depth == 0:
            out.append((m.start(), m.end(), i))
    return out


def _unwrap_short_text(s: str) -> str:
    """All text commands become \\text{...}; a text holding no word (a letter, a number, E_1) loses its wrapper."""
    groups = _text_groups(s)
    if not groups:
        return s
    parts, last = [], 0
    for start, cstart, end in groups:
        content = s[cstart:end - 1]
        parts.append(s[last:start])
        stripped = content.strip()
        after_value = re.search(r"[\d})]\s*$", s[:start]) is not None and re.fullmatch(r"[A-Za-z]", stripped)
        if after_value or stripped == "E":
            parts.append("\\text{" + content + "}")  # a unit (5\text{ m}), or E (a variable latex2sympy misreads)
        elif not re.search(r"[A-Za-z]{2}", stripped.replace("\\%", "")) or re.fullmatch(r"\\[a-zA-Z]+", stripped):
            parts.append(stripped)
        else:
            parts.append("\\text{" + content + "}")
        last = end
    parts.append(s[last:])
    return "".join(parts)


def canonical(s: str) -> str:
    """One spelling for one answer (see the module docstring); whitespace collapsed, never removed."""
    s = _unicode(str(s))
    s = re.sub(r"\s+", " ", s)
    s = _THOUSANDS_MARK_RE.sub("", s)
    s = _REMOVE_RE.sub("", s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _SPACE_CMD_RE.sub(" ", s)
    for pat, rep in _RELATION_RE:
        s = pat.sub(rep, s)
    for pat, rep in _SIMPLE_SUBS:
        s = pat.sub(rep, s)
    s = _unwrap_short_text(s)
    s = _E_NOTATION_RE.sub(lambda m: f"{m.group(1)}\\times10^{{{int(m.group(2))}}}", s)
    s = _SCI_TIMES_RE.sub(r"\\times10^", s)
    s = _BARE_EXPONENT_RE.sub(lambda m: "^{" + m.group(1).lstrip("+") + "}", s)
    for pat, rep in _FRAC_DIGITS_RE:
        s = pat.sub(rep, s)
    s = _TRAILING_DOT_RE.sub("", s)
    s = _PRIME_RE.sub(lambda m: "^{" + "\\prime" * len(m.group(1)) + "}", s)
    s = _AND_OR_RE.sub(",", s)
    s = re.sub(r"\s+", " ", s).strip()
    while True:
        if s.startswith("\\boxed{") and s.endswith("}") and _closing(s, len("\\boxed")) == len(s) - 1:
            s = s[len("\\boxed{"):-1].strip()
        elif s.startswith("{") and s.endswith("}") and _closing(s, 0) == len(s) - 1:
            s = s[1:-1].strip()
        else:
            break
    s = _APPROX_RE.sub("=", s)
    s = s.lstrip("=").strip()
    s = s.rstrip(".,;: ").strip()
    m = _WHOLE_THOUSANDS_RE.match(s)
    if m:  # 1,000 (alone or before a unit) is a number, not a list
        s = m.group(1).replace(",", "") + s[m.end(1):]
    return s


def squeeze(s: str) -> str:
    """The canonical form without spaces and with single-character braces dropped (E_{1} -> E_1): for equality
    of spellings only."""
    s = s.replace(" ", "")
    return re.sub(r"([_^])\{(\w)\}", r"\1\2", s)


# ---------------------------------------------------------------- structure

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = set(")]}")


def _closing(s: str, i: int) -> int:
    """Index of the bracket closing the one at s[i] (any of ([{ closes any of )]} : intervals mix them); -1."""
    depth = 0
    for j in range(i, len(s)):
        c = s[j]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0:
                return j
    return -1


def _scan_top(s: str):
    """Yield (index, char) of characters at bracket depth 0 (\\{ \\} \\langle \\rangle and \\begin...\\end count as
    brackets too)."""
    depth, i, n = 0, 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            m = re.match(r"\\(begin|end|langle|rangle|\{|\})", s[i:i + 7])
            if m:
                word = m.group(1)
                if word in ("begin", "langle", "{"):
                    depth += 1
                else:
                    depth -= 1
                if word in ("begin", "end"):
                    j = s.find("}", i)
                    i = j + 1 if j > 0 else n
                else:
                    i += len(m.group(0))
                continue
            if depth == 0:
                yield i, c
            i += 1
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0:
            yield i, c
        i += 1


def split_top(s: str, seps: str = ",;") -> list[str]:
    """Split at separators outside brackets."""
    parts, last = [], 0
    for i, c in _scan_top(s):
        if c in seps:
            parts.append(s[last:i])
            last = i + 1
    parts.append(s[last:])
    return [p.strip() for p in parts]


_REL_OPS = ("\\le", "\\ge", "\\ne", "\\in", "<", ">", "=")
_REL_RE = re.compile(r"\\(?:le|ge|ne|in)(?![a-zA-Z])|[<>=]")


def _split_relations(s: str) -> list[str] | None:
    """[operand, op, operand, ...] for a top-level relation chain, else None."""
    top = {i for i, _ in _scan_top(s)}
    out, last = [], 0
    for m in _REL_RE.finditer(s):
        if m.start() in top:
            out += [s[last:m.start()].strip(), m.group(0)]
            last = m.end()
    if not out:
        return None
    out.append(s[last:].strip())
    return out


def _wrapped(s: str, open_: str, close: str) -> bool:
    return len(s) >= 2 and s[0] in open_ and s[-1] in close and _closing(s, 0) == len(s) - 1


_MATRIX_RE = re.compile(r"^\\begin\{([pbBvV]?matrix|smallmatrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.S)
_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z \-']*[A-Za-z]$")


def is_text(s: str) -> bool:
    """A whole `\\text{...}` with a word in it, or plain words (at least one of three letters or more)."""
    g = _text_groups(s)
    if len(g) == 1 and g[0][0] == 0 and g[0][2] == len(s):
        return True
    return bool(_WORDS_RE.match(s)) and any(len(w) >= 3 for w in re.split(r"[ \-']", s))


def text_key(s: str) -> str:
    """A text answer as compared: \\text wrappers, case, articles, brackets and punctuation dropped."""
    s = _TEXT_CMD_RE.sub("{", s)
    s = re.sub(r"[{}()\[\].,;:!?\"`]|\\", " ", s).lower()
    words = s.split()
    while words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def parse(s: str):
    """The structure of a canonical answer (see the module docstring)."""
    items = [p for p in split_top(s) if p]
    if len(items) > MAX_ITEMS:
        raise Rejected(f"{len(items)} answers in a list (limit {MAX_ITEMS})")
    if len(items) > 1:
        return ("list", _flatten([parse_item(p) for p in items]))
    return parse_item(items[0] if items else "")


def _flatten(nodes: list) -> list:
    """Answers inside a list: a `\\pm` pair or a set in a list counts as its members (1 \\pm \\sqrt 5, -2)."""
    out = []
    for n in nodes:
        out += n[1] if n[0] == "set" else [n]
    return out


_PM_RE = re.compile(r"\\(pm|mp)(?![a-zA-Z])")


def _expand_pm(s: str) -> list[str]:
    if len(_PM_RE.findall(s)) > 3:
        raise Rejected("more than 3 \\pm signs")
    out = [s]
    for _ in range(3):
        nxt = []
        for x in out:
            m = _PM_RE.search(x)
            if m is None:
                nxt.append(x)
                continue
            signs = "+-" if m.group(1) == "pm" else "-+"
            nxt += [x[:m.start()] + signs[0] + x[m.end():], x[:m.start()] + signs[1] + x[m.end():]]
        out = nxt
    return out


_BRACKETED_MATRIX_RE = re.compile(r"^[(\[]\s*\\begin\{(matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}\s*[)\]]$", re.S)
_SET_BUILDER_RE = re.compile(r"^\\\{\s*([A-Za-z])\s*(?:\\mid|\||:)(.*)\\\}$", re.S)


def parse_item(s: str):
    s = s.strip()
    if not s:
        return ("atom", "")
    m = _BRACKETED_MATRIX_RE.match(s)
    if m:  # \left(\begin{matrix} ... \end{matrix}\right) is a pmatrix
        s = "\\begin{pmatrix}" + m.group(2) + "\\end{pmatrix}"
    m = _SET_BUILDER_RE.match(s)
    if m:  # \{x \mid x < 3\}: the condition
        return parse_item(m.group(2))
    m = _MATRIX_RE.match(s)
    if m and m.group(1) not in ("vmatrix", "Vmatrix"):
        rows = [r for r in re.split(r"\\\\", m.group(2))]
        cells = [[c.strip() for c in r.split("&")] for r in rows if r.strip()]
        if sum(len(r) for r in cells) > MAX_ITEMS:
            raise Rejected(f"matrix of more than {MAX_ITEMS} entries")
        return ("matrix", cells)
    if s.startswith("\\{") and s.endswith("\\}") and "\\mid" not in s and ":" not in s:
        inner = s[2:-2].strip()
        return ("set", _flatten([parse_item(p) for p in split_top(inner) if p])) if inner else ("set", [])
    if s in ("\\emptyset", "\\{\\}"):
        return ("set", [])
    if _PM_RE.search(s) and not re.search(r"\\(?:cup|cap)(?![a-zA-Z])", s):
        return ("set", [parse_item(x) for x in _expand_pm(s)])
    cup = [i for i, c in _scan_top(s) if c == "\\" and re.match(r"\\cup(?![a-zA-Z])", s[i:i + 5])]
    if cup:
        starts, ends = [0, *(c + 4 for c in cup)], [*cup, len(s)]
        parts = [s[a:b].strip() for a, b in zip(starts, ends)]
        if not all(parts):
            return ("atom", s)  # a \cup without two sides: not an answer
        return ("union", [parse_item(p) for p in parts])
    rel = _split_relations(s)
    if rel is not None:
        return ("rel", rel)
    if s.startswith("\\langle") and s.endswith("\\rangle"):
        return ("tuple", [parse_item(p) for p in split_top(s[len("\\langle"):-len("\\rangle")])])
    if _wrapped(s, "([", ")]"):
        inner = split_top(s[1:-1], ",")
        if len(inner) >= 2:
            if len(inner) > MAX_ITEMS:
                raise Rejected(f"tuple of more than {MAX_ITEMS} entries")
            return ("bracket", s[0], s[-1], [parse_item(p) for p in inner])
    if is_text(s):
        return ("text", s)
    return ("atom", s)


# ---------------------------------------------------------------- units and plain numbers

_UNIT_WORDS = ("cm", "mm", "km", "kg", "mg", "ml", "ft", "inches", "inch", "feet", "foot", "yards", "yard", "miles",
               "mile", "meters", "meter", "metres", "metre", "seconds", "second", "sec", "minutes", "minute", "min",
               "hours", "hour", "hrs", "hr", "days", "day", "weeks", "week", "years", "year", "degrees", "degree",
               "dollars", "dollar", "cents", "cent", "units", "unit", "mph", "kph", "km/h", "m/s", "sq",
               "square units", "square feet", "square inches", "square meters", "liters", "litres", "grams",
               "gallons", "pounds", "people", "ways", "students", "times", "points", "percent")
_BARE_UNIT_RE = re.compile(r"(?<=[\d}) ])\s*(?:" + "|".join(sorted(map(re.escape, _UNIT_WORDS), key=len,
                                                                    reverse=True))
                           + r")(?:\s*\^\s*\{?[23]\}?)?$")
_TEXT_UNIT_RE = re.compile(r"\\text\{([^{}]*)\}(?:\s*\^\s*\{?(-?[1-4])\}?)?$")


_UNIT_ALIASES = {"in": "inch", "inche": "inch", "ft": "feet", "foot": "feet", "sec": "second", "s": "second",
                 "secs": "second", "min": "minute", "mins": "minute", "hr": "hour", "hrs": "hour", "h": "hour",
                 "yr": "year", "yrs": "year", "m": "meter", "metre": "meter", "cm": "centimeter",
                 "centimetre": "centimeter", "km": "kilometer", "kilometre": "kilometer", "degree": "deg",
                 "\\circ": "deg", "^\\circ": "deg", "dollar": "dollar", "cent": "cent", "unit": "unit"}


def unit_key(u: str) -> str:
    """A unit as compared: lower case, plural, abbreviations and `square X` / `X^2` spellings folded."""
    u = re.sub(r"\s+", " ", u.lower().replace("{", "").replace("}", "")).strip()
    power = ""
    m = re.match(r"^(?:square|sq\.?)\s+(.*)$", u) or re.match(r"^(.*?)\s*(?:squared)$", u)
    if m:
        u, power = m.group(1), "^2"
    m = re.match(r"^(?:cubic|cu\.?)\s+(.*)$", u)
    if m:
        u, power = m.group(1), "^3"
    m = re.match(r"^(.*?)\^(-?[1-4])$", u)
    if m:
        u, power = m.group(1), "^" + m.group(2)
    u = u.replace(" ", "")
    if len(u) > 3 and u.endswith("s") and not u.endswith("ss"):
        u = u[:-1]
    return _UNIT_ALIASES.get(u, u) + power


def split_unit(s: str) -> tuple[str, str | None]:
    """(value, unit) with at most one trailing unit taken off: "%", "deg", or a unit_key; the value must not be
    empty. `33\\%` -> ("33", "%"); `\\%\\%33` -> unchanged; `5 \\text{ cm}^2` -> ("5", "cm^2")."""
    s = s.strip()
    if s.endswith("\\%"):
        core = s[:-2].strip()
        return (core, "%") if core and not core.endswith("\\%") else (s, None)
    if s.endswith("^\\circ"):
        core = s[:-len("^\\circ")].strip()
        return (core, "deg") if core else (s, None)
    m = _TEXT_UNIT_RE.search(s)
    if m and s[:m.start()].strip() and re.fullmatch(r"\s*[A-Za-z][A-Za-z .\-/]*(?:\^\{?-?[1-4]\}?[A-Za-z .\-/]*)*\s*",
                                                    m.group(1)):
        unit = unit_key(m.group(1) + (f"^{m.group(2)}" if m.group(2) else ""))
        return s[:m.start()].strip(), unit
    m = _BARE_UNIT_RE.search(s)
    if m and s[:m.start()].strip():
        return s[:m.start()].strip(), unit_key(re.sub(r"\s*\^\s*\{?([23])\}?$", r"^\1", m.group(0)))
    return s, None


_INT = r"\d+"
_DEC = r"(?:\d+\.\d*|\.\d+|\d+)"
_NUM_RES = {
    "sci": re.compile(rf"^({_DEC})\\times10\^\{{([+-]?\d+)\}}$"),
    "pow10": re.compile(r"^10\^\{([+-]?\d+)\}$"),
    "dec": re.compile(rf"^({_DEC})$"),
    "frac": re.compile(rf"^\\frac\{{([+-]?{_DEC})\}}\{{([+-]?{_DEC})\}}$"),
    "slash": re.compile(rf"^({_DEC})/({_DEC})$"),
    "mixed": re.compile(rf"^({_INT})\\frac\{{({_INT})\}}\{{({_INT})\}}$"),
    "repeating": re.compile(r"^(\d*)\.(\d*)\\overline\{(\d{1,20})\}$"),
}


def number(s: str) -> tuple[Fraction, bool] | None:
    """(exact value, approximate?) of a plain number written in one of the forms of the module docstring; None
    otherwise. Approximate: a decimal point or scientific notation (the caller applies a tolerance)."""
    t = s.replace(" ", "").replace("{,}", "")
    sign = 1
    while t[:1] in "+-" and t:
        sign, t = (-sign if t[0] == "-" else sign), t[1:]
    if t.startswith("(") and t.endswith(")") and _closing(t, 0) == len(t) - 1:
        return None  # (5) is left to the parser
    m = _NUM_RES["dec"].match(t)
    if m:
        return sign * Fraction(m.group(1)), "." in t
    m = _NUM_RES["sci"].match(t)
    if m:
        e = int(m.group(2))
        if abs(e) > MAX_EXPONENT:
            raise Rejected(f"exponent {e} (limit {MAX_EXPONENT})")
        return sign * Fraction(m.group(1)) * Fraction(10) ** e, True
    m = _NUM_RES["pow10"].match(t)
    if m:
        e = int(m.group(1))
        if abs(e) > MAX_EXPONENT:
            raise Rejected(f"exponent {e} (limit {MAX_EXPONENT})")
        return sign * Fraction(10) ** e, False
    for key in ("frac", "slash"):
        m = _NUM_RES[key].match(t)
        if m:
            den = Fraction(m.group(2))
            if den == 0:
                return None
            return sign * Fraction(m.group(1)) / den, "." in t
    m = _NUM_RES["repeating"].match(t)
    if m:  # 0.1\overline{6} = 0.1666...
        whole, fixed, rep = m.group(1) or "0", m.group(2), m.group(3)
        value = Fraction(whole) + Fraction(int(fixed or "0"), 10 ** len(fixed)) + \
            Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
        return sign * value, False
    m = _NUM_RES["mixed"].match(t)
    if m and int(m.group(3)) != 0:
        return sign * (int(m.group(1)) + Fraction(int(m.group(2)), int(m.group(3)))), False
    return None


_BASE_RE = re.compile(r"^(\d+)_\{?(\d{1,2})\}?$")


def based_numeral(s: str) -> tuple[str, int] | None:
    """`52_8` / `52_{8}` -> ("52", 8): digits as written and the base (the digits are compared, not values)."""
    m = _BASE_RE.match(s.replace(" ", ""))
    return (m.group(1).lstrip("0") or "0", int(m.group(2))) if m else None


def answer_key(s: str) -> str:
    """The text by which equal spellings of an answer are grouped (maj@k votes): canonical, spaces and
    single-character braces dropped. Over-long answers are keyed as written."""
    s = str(s)
    return squeeze(canonical(s)) if len(s) <= MAX_CHARS else s
