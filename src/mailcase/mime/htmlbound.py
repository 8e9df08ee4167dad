"""Bounding inbound HTML before it is sanitised: a size cut and a nesting-depth cap.

Why: the sanitiser (nh3 → html5ever) costs about (number of tags) × (nesting depth), so one
small message of `"<div>" * 200000` held Email-to-Case for minutes (issue 11). A linear scan
here counts open elements and drops the start tags that would nest deeper than `max_depth`;
the sanitiser still runs on what remains (XSS is removed there, not here).

The scan mirrors the HTML tokenizer where it matters for counting (WHATWG HTML §13.2.5: tag,
attribute-value and comment states, raw-text elements) and errs towards counting TOO DEEP:

- an end tag pops its element only when it is current or only elements with implied end tags
  (`<p>`, `<li>`…, and cells inside a row or table) are above it, and a start tag closes only
  the few elements the tree builder certainly closes (`<p>` before a block, `<li>` before
  `<li>`, a cell before a cell…); anything else the tree builder would pop, we keep counting;
- with `<svg>` or `<math>` anywhere (foreign content, where raw-text and comment rules
  differ), nothing is ever popped: every start tag counts.

A document whose depth we over-count only loses nesting (its deepest tags) in display; the
text stays. What this scan cannot foresee is bounded by the pipeline's per-message time limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BoundedHTML", "bound_html"]

_WS = "\t\n\f\r "
# §13.2.5.8-.41: a tag, with attributes whose values may be quoted (quotes only after "=").
_TAG = re.compile(
    r"<(/?)([A-Za-z][^\t\n\f\r />]*)"
    r"(?>[\t\n\f\r /]+|=?[^\t\n\f\r />=]*"
    r"(?>[\t\n\f\r ]*=[\t\n\f\r ]*(?>\"[^\"]*\"|'[^']*'|[^\t\n\f\r >]+)?)?)*+>"
)
_COMMENT = re.compile(r"<!--(?:-?>|.*?--!?>)", re.DOTALL)  # §13.2.5.43-.52
_BOGUS = re.compile(r"<(?:[!?]|/[^A-Za-z>])[^>]*>")  # §13.2.5.42: <!DOCTYPE, <?, </3 …
_FOREIGN = re.compile(r"<(?:svg|math)[\t\n\f\r />]", re.IGNORECASE)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# §13.1.2: void elements (and `image`, which the tree builder turns into `img`).
_VOID = frozenset(
    "area base basefont bgsound br col embed frame hr image img input keygen link meta param "
    "source track wbr".split()
)
# §13.1.2.1-.2: raw text / escapable raw text: no tags inside until the matching end tag.
_RAW = frozenset("script style xmp iframe noembed noframes noscript textarea title".split())
_RAW_END = {name: re.compile(rf"</{name}[\t\n\f\r />]", re.IGNORECASE) for name in _RAW}
_P_CLOSERS = frozenset(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption "
    "figure footer header hgroup main menu nav ol p search section summary ul h1 h2 h3 h4 h5 h6 "
    "pre listing form table hr xmp plaintext li dd dt td th tr".split()
)
# §13.2.6.4.7: the current element these start tags always close first.
_CLOSED_BY: dict[str, frozenset[str]] = {
    "p": _P_CLOSERS,
    "li": frozenset({"li"}),
    "dd": frozenset({"dd", "dt"}),
    "dt": frozenset({"dd", "dt"}),
    "td": frozenset({"td", "th", "tr"}),
    "th": frozenset({"td", "th", "tr"}),
    "tr": frozenset({"tr"}),
    "option": frozenset({"option", "optgroup"}),
    "optgroup": frozenset({"optgroup"}),
}
# §13.2.6.3: "generate implied end tags" pops these before an end tag's own element; the end
# of a table part also closes the parts inside it (§13.2.6.4.9-.15). Looked for near the top.
_IMPLIED = frozenset("dd dt li optgroup option p rb rp rt rtc".split())
_TABLE_INNER = _IMPLIED | frozenset("td th tr tbody thead tfoot caption colgroup".split())
_POP_THROUGH: dict[str, frozenset[str]] = {
    name: _TABLE_INNER for name in ("table", "tbody", "thead", "tfoot", "tr")
}
_MAX_POP = 8
# Below this many "<", even the deepest nesting costs the sanitiser little (4096 nested
# elements: about 30 ms), so ordinary mail is not scanned at all.
_SCAN_FROM = 4096


def _end_tag(stack: list[str], name: str) -> None:
    """Pop `name` if it is the current element or only elements it surely closes are above it."""
    through = _POP_THROUGH.get(name, _IMPLIED)
    for i in range(len(stack) - 1, max(-1, len(stack) - 2 - _MAX_POP), -1):
        if stack[i] == name:
            del stack[i:]
            return
        if stack[i] not in through:
            return


@dataclass(frozen=True, slots=True)
class BoundedHTML:
    """The HTML to sanitise, and what was cut from the input."""

    html: str
    truncated: bool  # cut at max_chars (or at a tag left open at the end)
    flattened: int  # start tags dropped because they nested deeper than max_depth


def bound_html(html: str, *, max_chars: int, max_depth: int) -> BoundedHTML:
    """`html` cut to `max_chars` characters with start tags deeper than `max_depth` dropped;
    linear in the input (see module doc)."""
    truncated = len(html) > max_chars
    if truncated:
        html = html[:max_chars]
    if html.count("<") <= max(max_depth, _SCAN_FROM):
        return BoundedHTML(html, truncated, 0)  # too few tags to nest deeper, or to be slow
    foreign = _FOREIGN.search(html) is not None
    out: list[str] = []
    stack: list[str] = []
    dropped = 0
    kept_from = 0  # start of the input not yet copied to `out`
    pos = 0
    end = len(html)
    while (pos := html.find("<", pos)) != -1:
        m = _TAG.match(html, pos)
        if m is None:
            nxt = html[pos + 1 : pos + 2]
            if nxt == "!" and html.startswith("<!--", pos):
                c = _COMMENT.match(html, pos)
                if c is None:
                    break  # the rest is one comment (EOF in comment)
                pos = c.end()
                continue
            if nxt.isascii() and nxt.isalpha() or html.startswith("</", pos) and (
                html[pos + 2 : pos + 3].isascii() and html[pos + 2 : pos + 3].isalpha()
            ):
                truncated, end = True, pos  # EOF in a tag: the tokenizer drops the rest
                break
            if html.startswith("</>", pos):
                pos += 3
                continue
            if nxt in {"!", "?", "/"}:
                b = _BOGUS.match(html, pos)
                if b is None:
                    break  # EOF in a bogus comment: the rest is a comment
                pos = b.end()
                continue
            pos += 1  # "<" followed by anything else is text
            continue
        slash, name = m.group(1, 2)
        name = name.lower() if name.isascii() else name.translate(_ASCII_LOWER)
        if slash:  # end tag
            if foreign:
                pass
            elif stack and stack[-1] == name:
                stack.pop()
            else:
                _end_tag(stack, name)
            pos = m.end()
            continue
        if name in _VOID:
            pos = m.end()
            continue
        if not foreign:
            while stack and name in _CLOSED_BY.get(stack[-1], ()):
                stack.pop()
        if len(stack) >= max_depth:
            dropped += 1
            out.append(html[kept_from:pos])
            kept_from = pos = m.end()
            continue
        stack.append(name)
        pos = m.end()
        if name in _RAW and not foreign:
            raw_end = _RAW_END[name].search(html, pos)
            if raw_end is None:
                break  # the rest is this element's text
            pos = raw_end.start()
    if not dropped and end == len(html):
        return BoundedHTML(html, truncated, 0)
    out.append(html[kept_from:end])
    return BoundedHTML("".join(out), truncated, dropped)
