"""A tiny document model rendered twice: report.md (images beside it) and report.html (one
self-contained file, images inline as base64, no script, nothing fetched)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Para:
    text: str
    """Plain text; `**bold**` is the only markup."""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: str = ""
    """One letter per column: l or r (default: first left, the rest right)."""


@dataclass
class Image:
    path: Path
    caption: str


@dataclass
class Pre:
    text: str


@dataclass
class Section:
    title: str
    blocks: list[Para | Table | Image | Pre] = field(default_factory=list)


def _align(t: Table) -> str:
    return t.align or "l" + "r" * (len(t.headers) - 1)


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, sections: list[Section], image_dir: Path) -> str:
    out = [f"# {title}\n"]
    for sec in sections:
        out.append(f"## {sec.title}\n")
        for b in sec.blocks:
            if isinstance(b, Para):
                out.append(b.text + "\n")
            elif isinstance(b, Table):
                out.append("| " + " | ".join(map(_md_cell, b.headers)) + " |")
                out.append("|" + "".join(":---|" if a == "l" else "---:|" for a in _align(b)))
                out.extend("| " + " | ".join(map(_md_cell, r)) + " |" for r in b.rows)
                out.append("")
            elif isinstance(b, Image):
                out.append(f"![{b.caption}]({b.path.relative_to(image_dir).as_posix()})\n")
                out.append(f"*{b.caption}*\n")
            elif isinstance(b, Pre):
                out.append("```\n" + b.text.rstrip("\n") + "\n```\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
max-width:1060px;margin:2em auto;padding:0 1.2em;color:#1d1d1f}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;
padding-bottom:.2em}table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{padding:.3em .7em;border-bottom:1px solid #e5e5e5;vertical-align:top;
overflow-wrap:anywhere}table{max-width:100%}
th{background:#f5f5f7;text-align:left}td.r{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}td:first-child{min-width:7em}pre{background:#f7f7f9;padding:.8em;overflow-x:auto;
font-size:.85em;white-space:pre-wrap}nav a{margin-right:1em}
"""


def to_html(title: str, sections: list[Section]) -> str:
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>"
        + "".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections))
        + "</nav>",
    ]
    for i, sec in enumerate(sections):
        out.append(f'<h2 id="s{i}">{html.escape(sec.title)}</h2>')
        for b in sec.blocks:
            if isinstance(b, Para):
                out.append(f"<p>{_inline(b.text)}</p>")
            elif isinstance(b, Table):
                al = _align(b)
                out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b.headers))
                for r in b.rows:
                    cells = "".join(
                        f'<td class="{a}">{_inline(c)}</td>' for a, c in zip(al, r, strict=False)
                    )
                    out.append(f"<tr>{cells}</tr>")
                out.append("</table>")
            elif isinstance(b, Image):
                data = base64.b64encode(b.path.read_bytes()).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(b.caption)}" '
                    f'src="data:image/png;base64,{data}"><figcaption>{_inline(b.caption)}'
                    "</figcaption></figure>"
                )
            elif isinstance(b, Pre):
                out.append(f"<pre>{html.escape(b.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
