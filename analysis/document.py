"""A report as a list of blocks, rendered twice: markdown (report.md) and HTML (report.html).

Building the report once as data and rendering it two ways keeps the two files saying the same
thing. The HTML is one self-contained file: charts are inlined as base64 PNG, styles and the
small image-check script are inline, nothing is fetched from the network. The script marks the
<body> with how many images decoded, which `check-report` reads back from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    path: Path  # PNG on disk, relative links in markdown; HTML inlines the SVG beside it
    alt: str
    rel: str  # link relative to the report file


@dataclass(frozen=True)
class Code:
    text: str
    lang: str = ""


Block = Heading | Para | Bullets | Table | Image | Code


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)
    # term -> definition: the HTML shows the definition as hover text where the term first
    # appears in the page's prose (issue 21); markdown has no hover, its glossary is a section
    glossary: dict[str, str] = field(default_factory=dict)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def slug(text: str) -> str:
    """The anchor of a heading, as GitHub renders markdown: lowercase, punctuation dropped,
    spaces to hyphens (so the same link works in report.md and report.html)."""
    kept = "".join(ch for ch in text.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def contents(doc: Document) -> list[tuple[str, str]]:
    """(heading text, anchor) of every section heading, in order: the table of contents."""
    return [(b.text, slug(b.text)) for b in doc.blocks if isinstance(b, Heading) and b.level == 2]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    toc = contents(doc)
    if len(toc) > 3:
        out += ["**Contents:** " + " · ".join(f"[{t}](#{a})" for t, a in toc), ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"*{b.caption}*", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "---|" * len(b.headers))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.rel})", ""]
        else:
            out += [f"```{b.lang}", b.text.rstrip("\n"), "```", ""]
    return "\n".join(out)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
abbr[title] { text-decoration: underline dotted; cursor: help; }
img { max-width: 100%; border: 1px solid #ddd; }
figure.chart { margin: 0.5em 0 1em; }
figure.chart svg { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 0.3em; }
nav#contents { background: #f7f7f7; padding: 0.5em 1em; columns: 2; font-size: 0.9em; }
"""

# Counts images that decoded (naturalWidth > 0) and errors (console.error, failed loads, script
# errors) once the page has loaded; check-report reads both attributes from Chromium's
# --dump-dom output.
_SCRIPT = """
var echobenchErrors = [];
window.addEventListener('error', function (e) {
  echobenchErrors.push(String(e.message || (e.target && e.target.src) || 'error'));
}, true);
(function () {
  var original = console.error;
  console.error = function () {
    echobenchErrors.push(Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
})();
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0, total = imgs.length;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  var charts = document.querySelectorAll('figure.chart');
  for (var j = 0; j < charts.length; j++) {
    total++;
    var svg = charts[j].querySelector('svg');
    if (svg && svg.getBBox().width > 0 && svg.querySelectorAll('path').length > 0) ok++;
  }
  document.body.setAttribute('data-images', ok + '/' + total);
  document.body.setAttribute('data-errors', String(echobenchErrors.length));
});
"""


_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _link(m: re.Match[str]) -> str:
    """[text](page.md) -> a link to the page's HTML twin (the report and its appendix)."""
    text, target = m.group(1), m.group(2)
    if target.endswith(".md"):
        target = target[:-3] + ".html"
    return f'<a href="{target}">{text}</a>'


class _Hover:
    """Wraps the first use of each glossary term in prose with its definition as hover text."""

    def __init__(self, terms: dict[str, str]) -> None:
        self._left = dict(terms)

    def __call__(self, escaped: str) -> str:
        if not self._left:
            return escaped
        pieces = re.split(r"(<[^>]+>)", escaped)  # never inside a tag or its attributes
        for i, piece in enumerate(pieces):
            if not piece.startswith("<"):
                pieces[i] = self._wrap(piece)
        return "".join(pieces)

    def _wrap(self, text: str) -> str:
        for term in list(self._left):
            hit = re.search(rf"(?<![\w-]){re.escape(html.escape(term))}(?![\w-])", text)
            if hit:
                tip = html.escape(self._left.pop(term), quote=True)
                abbr = f'<abbr title="{tip}">{hit.group(0)}</abbr>'
                text = text[: hit.start()] + abbr + text[hit.end() :]
        return text


def _plain(escaped: str) -> str:
    return escaped


def _inline(text: str, hover: Callable[[str], str] = _plain) -> str:
    """Escape, then render the inline markup the report uses: `code`, **bold**, [links]."""
    parts = html.escape(text).split("`")
    out = []
    for i, p in enumerate(parts):
        if i % 2:
            out.append(f"<code>{p}</code>")
            continue
        bold = "".join(f"<strong>{x}</strong>" if j % 2 else x for j, x in enumerate(p.split("**")))
        out.append(hover(_LINK.sub(_link, bold)))
    return "".join(out)


def _figure(b: Image) -> str:
    """A chart inline: its SVG when there is one (hover a point to read its value), else the
    PNG as a data URI. Either way the page needs no other file and no network."""
    svg = b.path.with_suffix(".svg")
    if svg.exists():
        text = svg.read_text(encoding="utf-8")
        text = text[text.index("<svg") :]  # drop the XML declaration and doctype
        if "<metadata>" in text:  # matplotlib's RDF block: namespaces and a date, no content
            text = text[: text.index("<metadata>")] + text[text.index("</metadata>") + 11 :]
        return f'<figure class="chart" role="img" aria-label="{html.escape(b.alt)}">{text}</figure>'
    data = base64.b64encode(b.path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}"></p>'


def to_html(doc: Document) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    toc = contents(doc)
    if len(toc) > 3:
        links = "".join(f'<li><a href="#{a}">{_inline(t)}</a></li>' for t, a in toc)
        out.append(f'<nav id="contents"><strong>Contents</strong><ol>{links}</ol></nav>')
    hover = _Hover(doc.glossary)
    for b in doc.blocks:
        if isinstance(b, Heading):
            anchor = f' id="{slug(b.text)}"' if b.level == 2 else ""
            out.append(f"<h{b.level}{anchor}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text, hover)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i, hover)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            cap = f"<caption>{_inline(b.caption)}</caption>" if b.caption else ""
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows
            )
            out.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            out.append(_figure(b))
        else:
            out.append(f"<pre>{html.escape(b.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
