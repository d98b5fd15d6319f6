"""The parts every report page is made of: one HTML file with its styles inline, sections, tables, notes."""
from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#234;color:#fff;padding:12px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:13px;opacity:.85}
nav{padding:6px 24px;background:#e8edf2;font-size:13px}nav a{margin-right:12px;color:#234}
main{padding:0 24px 24px}section{background:#fff;border:1px solid #ddd;border-radius:6px;margin:16px 0;
padding:8px 16px}h2{font-size:17px;margin:8px 0}h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f0f3f6}td.text,th.text{text-align:left}.note{color:#666;font-size:13px}
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}figure{margin:4px}
figcaption{font-size:12px;color:#444;text-align:center}pre{font-size:12px;overflow:auto;max-height:480px}
.clips{display:flex;flex-wrap:wrap;gap:10px}.clip{border:1px solid #ddd;border-radius:6px;padding:6px;
width:260px;font-size:12px;background:#fcfcfc}.clip img{width:240px;height:64px;display:block}
.clip audio{width:240px;height:32px}.wrong{color:#b00}
"""


def cell(value: Any) -> str:
    """A table cell's text: numbers with 4 significant digits, missing values as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: int = 1) -> str:
    """An HTML table (no header row when ``header`` is empty); the first ``text_columns`` columns are
    left-aligned text."""
    def row(values: Sequence[Any], tag: str) -> str:
        return "<tr>" + "".join(f'<{tag}{" class=text" if k < text_columns else ""}>'
                                f'{cell(v) if tag == "td" else escape(str(v))}</{tag}>'
                                for k, v in enumerate(values)) + "</tr>"
    return "<table>" + (row(header, "th") if header else "") + "".join(row(r, "td") for r in rows) + "</table>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def figure(svg_or_img: str, caption: str) -> str:
    return f"<figure>{svg_or_img}<figcaption>{escape(caption)}</figcaption></figure>"


def charts(figures: Sequence[str]) -> str:
    return '<div class="charts">' + "".join(figures) + "</div>"


def details(summary: str, body: str) -> str:
    """A collapsed block the reader opens."""
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def section(anchor: str, title: str, body: str) -> tuple[str, str, str]:
    return anchor, title, body


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole page: header, a link to every section, the sections."""
    links = "".join(f'<a href="#{anchor}">{escape(name)}</a>' for anchor, name, _ in sections)
    body = "".join(f'<section id="{anchor}"><h2>{escape(name)}</h2>{content}</section>'
                   for anchor, name, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f'<body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header><nav>{links}</nav>'
            f"<main>{body}</main></body></html>")


def commands(histories: Sequence[tuple[str, list[dict]]]) -> str:
    """Collapsed, per folder: the command lines recorded in it (oldest first), each with its start, audiotune's
    version and the working directory it ran in; nothing for a folder without any."""
    parts = []
    for label, history in histories:
        if not history:
            continue
        lines = "\n".join(f"# {entry.get('started', '?')}, audiotune {entry.get('version', '?')}, in "
                          f"{entry.get('cwd', '?')}\n{entry.get('command_line', '')}" for entry in history)
        parts.append(details(f"{label}: the command line{'s' if len(history) > 1 else ''} that wrote it",
                             f"<pre>{escape(lines)}</pre>"))
    return "".join(parts)
