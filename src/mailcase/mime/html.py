"""Sanitising inbound HTML (nh3) and turning HTML into text for the case description.

The sanitised HTML is shown to agents in a browser, inside our own origin, so it must not run
code and, by default, must not load anything: a remote image is a read receipt for the
sender (and a way to learn an agent's IP address), and a relative URL would hit our own server.
Hence, on top of nh3's (ammonia's) allowlist:

- no `<style>`, `<link>`, `<iframe>`, `<svg>`, forms, `srcset`, `background=` (all loads);
- `style=""` kept only for properties that cannot carry an image (`filter_style_properties`);
- relative URLs removed (`url_relative="deny"`), `javascript:`/`vbscript:` by the scheme
  allowlist, `data:` allowed only for raster images in `<img src>`;
- `<img src>` kept only for `cid:` (inline parts of the same message) and `data:image/*`;
  remote `src` is dropped (alt text remains) unless `allow_remote_images=True`.
"""

from __future__ import annotations

import re
from html import unescape as _unescape
from html.parser import HTMLParser

import nh3

__all__ = ["html_to_text", "sanitize_html"]

_EXTRA_TAGS = {"font", "center", "tfoot", "caption", "big", "small", "address"}
_TAGS = (set(nh3.ALLOWED_TAGS) | _EXTRA_TAGS) - {"area", "map"}
_LAYOUT = {"align", "valign", "width", "height", "bgcolor", "border", "style", "dir"}
_ATTRIBUTES: dict[str, set[str]] = {
    tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items() if tag in _TAGS
}
for _tag in ("table", "td", "th", "tr", "tbody", "thead", "tfoot", "col", "colgroup"):
    _ATTRIBUTES.setdefault(_tag, set()).update(_LAYOUT | {"cellpadding", "cellspacing"})
_ATTRIBUTES.setdefault("font", set()).update({"color", "face", "size"})
_ATTRIBUTES.setdefault("img", set()).update({"style", "border", "title"})
_ATTRIBUTES["*"] = {"style", "title", "lang", "dir", "align"}

_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
# Properties that take no <image> or url() value (CSS 2.1 / CSS Backgrounds 3).
_STYLE_PROPERTIES = {
    "color",
    "background-color",
    "border",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-color",
    "border-style",
    "border-width",
    "border-collapse",
    "border-spacing",
    "border-radius",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "font",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "font-variant",
    "line-height",
    "letter-spacing",
    "word-spacing",
    "text-align",
    "text-decoration",
    "text-indent",
    "text-transform",
    "vertical-align",
    "white-space",
    "width",
    "height",
    "min-width",
    "max-width",
    "min-height",
    "max-height",
    "display",
    "list-style-type",
    "table-layout",
    "direction",
    "float",
    "clear",
}
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpe?g|webp|bmp);base64,", re.IGNORECASE)
_URL_ATTRS = {"href", "src", "cite"}


def _filter(allow_remote: bool) -> object:
    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        # Must never raise: nh3 reports errors through sys.unraisablehook.
        if attr not in _URL_ATTRS:
            return value
        lowered = value.strip().lower()
        if lowered.startswith("data:"):
            return value if tag == "img" and attr == "src" and _DATA_IMAGE.match(lowered) else None
        if tag == "img" and attr == "src":
            if lowered.startswith("cid:") or allow_remote:
                return value
            return None
        if lowered.startswith("cid:"):
            return None  # a cid: link is only meaningful as an image source
        return value

    return attribute_filter


_CLEANERS: dict[bool, nh3.Cleaner] = {
    allow: nh3.Cleaner(
        tags=_TAGS,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template"},
        attributes=_ATTRIBUTES,
        attribute_filter=_filter(allow),  # type: ignore[arg-type]
        url_schemes=_URL_SCHEMES,
        url_relative="deny",
        filter_style_properties=_STYLE_PROPERTIES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    for allow in (False, True)
}


def sanitize_html(html: str, *, allow_remote_images: bool = False) -> str:
    """Sanitised HTML for display: no script, no handlers, no remote loads (see module doc)."""
    try:
        return _CLEANERS[allow_remote_images].clean(html)
    except Exception:  # noqa: BLE001 - nh3 raises only on interpreter-level problems; never fail a message
        return nh3.escape(html)


_BLOCK = {
    "p",
    "div",
    "br",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "blockquote",
    "pre",
    "hr",
    "dl",
    "dt",
    "dd",
    "section",
    "article",
    "header",
    "footer",
    "address",
    "center",
    "figure",
    "caption",
}
_SKIP = {"script", "style", "head", "title", "noscript", "template"}


class _TextExtractor(HTMLParser):
    """A small HTML → text walker: blocks become line breaks, lists get "- ", links keep URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0
        self.href: list[str | None] = []
        self.link_text: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
            return
        if tag == "pre":
            self.pre += 1
        if tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK:
            self.parts.append("\n\n" if tag in {"p", "blockquote", "table"} else "\n")
            if tag == "li":
                self.parts.append("- ")
        elif tag in {"td", "th"}:
            self.parts.append(" ")
        elif tag == "a":
            href = dict(attrs).get("href")
            self.href.append(href)
            self.link_text.append(len(self.parts))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.parts.append(f"[{alt}]")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            return
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag == "a" and self.href:
            href = self.href.pop()
            start = self.link_text.pop()
            shown = "".join(self.parts[start:]).strip()
            if href and href.startswith(("http:", "https:")) and href != shown:
                self.parts.append(f" <{href}>")
        elif tag in _BLOCK and tag not in {"br", "li"}:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            self.parts.append(data)
        else:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """Readable plain text from HTML (for the case description of HTML-only mail)."""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - HTMLParser has asserted on odd markup in some versions
        return _unescape(re.sub(r"<[^>]*>", " ", html)).strip()
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [line.strip(" \t") for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return text.strip()
