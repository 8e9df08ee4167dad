"""HTML bounded before sanitising (issue 11 item 2): size cut, nesting-depth cap, XSS still out.

The attack inputs are the ones that held Email-to-Case for minutes; the depth of what reaches
the sanitiser is checked with a real HTML parser, not with timings.
"""

from __future__ import annotations

from email.message import EmailMessage
from html.parser import HTMLParser

import pytest

from mailcase.mime import MAX_HTML_DEPTH, parse_message
from mailcase.mime.htmlbound import bound_html


class _Depth(HTMLParser):
    """Greatest nesting of start tags after sanitising (void elements do not nest)."""

    VOID = {"br", "img", "hr", "wbr", "col", "area", "input", "meta", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.depth = self.deepest = 0
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(a for a, _ in attrs)
        if tag not in self.VOID:
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)

    def handle_endtag(self, tag: str) -> None:
        self.depth = max(0, self.depth - 1)


def _depth(html: str) -> _Depth:
    d = _Depth()
    d.feed(html)
    d.close()
    return d


def _html_mail(html: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@example.test"
    msg["To"] = "support@example.test"
    msg["Subject"] = "html"
    msg.set_content(html, subtype="html", cte="base64")
    return msg.as_bytes()


ATTACKS = {
    "open-divs": "<div>" * 200_000,  # 1 MB: held processing 169 s
    "closed-divs": "<div>" * 200_000 + "x" + "</div>" * 200_000,  # 2.2 MB: 175 s
    "span-div": "<span><div></span>" * 50_000,  # end tags the tree builder ignores
    "quoted-end-tags": '<div title="</div>">' * 50_000,  # an end tag inside an attribute
    "tables": "<table><tr><td>" * 50_000,
    "foreign": "<svg><style>" + "<div>" * 100_000,  # a style in svg is not raw text
    "not-void": "<lin\u212a>" * 100_000,  # KELVIN SIGN: "link" only with Unicode lowering
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_html_reaches_the_sanitiser_bounded_in_depth(name: str) -> None:
    bounded = bound_html(ATTACKS[name], max_chars=4 * 131_072, max_depth=64)
    assert bounded.flattened > 0
    assert _depth(bounded.html).deepest <= 3 * 64  # implied tbody/tr at most triple it


@pytest.mark.parametrize("name", ["open-divs", "closed-divs"])
def test_attack_message_becomes_bounded_sanitised_html_with_its_text(name: str) -> None:
    html = ATTACKS[name].replace("<div>", "<div>x", 1000)
    email = parse_message(_html_mail(html))
    assert email.html_body and "x" in email.text_body
    assert _depth(email.html_body).deepest <= MAX_HTML_DEPTH
    assert any(d.kind == "html-depth" for d in email.defects)


def test_size_is_cut_before_sanitising() -> None:
    html = "<p>" + "word " * 400_000 + "</p><p>tail</p>"
    bounded = bound_html(html, max_chars=100_000, max_depth=64)
    assert bounded.truncated and len(bounded.html) <= 100_000
    assert "tail" not in bounded.html


def test_a_tag_cut_in_half_at_the_end_is_dropped() -> None:
    html = "<p>a</p>" * 5000 + '<a href="javascript:x'
    bounded = bound_html(html, max_chars=len(html), max_depth=4)
    assert bounded.html == "<p>a</p>" * 5000 and bounded.truncated


def test_ordinary_html_passes_unchanged() -> None:
    rows = "".join(f"<tr><td><p>row {i}<td>cell<br></tr>" for i in range(2000))
    html = (
        "<!DOCTYPE html><html><head><style>p { color: red } a<b</style>"
        "<!--[if mso]><table><tr><td><![endif]--></head><body>"
        f"<ul><li>one<li>two</ul><p>para<p>para<div>block</div><table>{rows}</table>"
        '<p title="a>b">quoted</p><script>document.write("<div>")</script></body></html>'
    )
    bounded = bound_html(html, max_chars=len(html), max_depth=16)
    assert bounded.flattened == 0 and not bounded.truncated
    assert bounded.html == html


@pytest.mark.parametrize(
    "payload",
    [
        '<img src=x onerror="alert(1)">',
        "<script>alert(1)</script>",
        '<a href="javascript:alert(1)">x</a>',
        '<svg onload="alert(1)"><script>alert(1)</script></svg>',
    ],
)
def test_xss_is_still_removed_in_and_below_the_depth_limit(payload: str) -> None:
    html = "<div>" * (MAX_HTML_DEPTH - 2) + payload + "<div>" * 5000 + payload
    email = parse_message(_html_mail(html))
    found = _depth(email.html_body)
    assert "script" not in found.tags and "svg" not in found.tags
    assert not {a for a in found.attrs if a.startswith("on")}
    assert "javascript:" not in email.html_body


def test_safe_path_keeps_html_as_an_attachment_and_text_from_it() -> None:
    raw = _html_mail("<div>" * 1000 + "<p>Hello &amp; welcome</p><script>x</script>")
    email = parse_message(raw, safe=True)
    assert email.html_body == "" and "Hello & welcome" in email.text_body
    (body,) = [a for a in email.attachments if a.filename == "body.html"]
    assert body.content_type == "text/html" and b"<p>Hello &amp; welcome</p>" in body.data
    assert any(d.kind == "slow-path" for d in email.defects)
