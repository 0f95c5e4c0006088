"""The markdown the reports write, as HTML: headings, pipe tables (number columns right-aligned),
paragraphs with **bold** and `code`; the page's CSS; results.md split at its `## ` headings.
Used by the experiment report (experiment/html_report.py).

Example:
    >>> markdown_to_html("| a | b |\n|---|---:|\n| x | 1.5 |")   # doctest: +SKIP
"""

from __future__ import annotations

import html
import re

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.6em;margin:.2em 0 .4em} h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1.05em;margin-top:1.4em} h4{font-size:.95em}
p,li{line-height:1.45;font-size:.95em} .note{color:#555;font-size:.88em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.8em;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f1f3f7;position:sticky;top:0} td.t,th.t{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
nav{font-size:.88em;background:#f1f3f7;padding:8px 12px;border-radius:6px} nav a{margin-right:12px}
pre{background:#f6f6f6;padding:10px;font-size:.78em;overflow-x:auto} details summary{cursor:pointer;font-weight:600}
.fail{color:#b00020;font-weight:600}
"""


def md_inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return out


def markdown_to_html(md: str) -> str:
    """The subset of markdown the reports write: headings, pipe tables, paragraphs."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            out.append(f"<h{level + 1}>{md_inline(line[level:].strip())}</h{level + 1}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            text = [j for j in range(len(rows[0])) if not all(_numeric(r[j]) for r in body if j < len(r))]
            head = "".join(f"<th{' class=t' if j in text else ''}>{md_inline(c)}</th>" for j, c in enumerate(rows[0]))
            cells = "".join(
                "<tr>"
                + "".join(f"<td{' class=t' if j in text else ''}>{md_inline(c)}</td>" for j, c in enumerate(r))
                + "</tr>"
                for r in body
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            continue
        elif line.strip():
            out.append(f"<p>{md_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _numeric(cell: str) -> bool:
    """A table cell that reads as a number (mean ± std, a gain, a count, or a dash)."""
    return bool(re.fullmatch(r"[-+–]?[\d.,]*%?( ± [\d.]+)?( \(\d+ seed\))?|–|-", cell.strip()))


def split_sections(md: str) -> dict[str, str]:
    """results.md split at its `## ` headings: heading -> the markdown under it."""
    parts: dict[str, str] = {"": ""}
    current = ""
    for line in md.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            parts[current] = ""
        else:
            parts[current] += line + "\n"
    return parts


__all__ = ["CSS", "markdown_to_html", "md_inline", "split_sections"]
