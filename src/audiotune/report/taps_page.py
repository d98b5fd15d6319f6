"""The report page of `audiotune taps detect` or `taps align`: the counts (taps detected; matched, unmatched, the
latency found), a table per recording, and each recording's timeline as drawn for ``--plot``, inline."""
from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from audiotune.report.html import note, page, section, table


@dataclass
class TapsReport:
    """What a taps command found: ``facts`` (name, value) rows of the whole run, ``recordings`` one row per
    recording under ``recording_header``, ``timelines`` (caption, PNG bytes) per recording."""

    title: str
    source: str
    facts: list[list[Any]]
    recording_header: list[str]
    recordings: list[list[Any]]
    timelines: list[tuple[str, bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def distinct_names(paths: Sequence[str]) -> dict[str, str]:
    """Each recording's label on the page: its file name, or where recordings share it, the fewest last parts of its
    path that tell it from the others (``a/r.wav``, ``b/r.wav``); the path as given where none does."""
    parts = {path: [part for part in re.split(r"[/\\]", path) if part] for path in dict.fromkeys(map(str, paths))}
    names = {}
    for path, own in parts.items():
        names[path] = path
        for count in range(1, len(own) + 1):
            if not any(other[-count:] == own[-count:] for known, other in parts.items() if known != path):
                names[path] = "/".join(own[-count:])
                break
    return names


def _timelines(timelines: Sequence[tuple[str, bytes]]) -> str:
    if not timelines:
        return note("no recording to draw")
    return "".join(f'<figure class="timeline"><img style="width:100%;max-width:1400px" alt="{escape(caption)}" '
                   f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
                   f"<figcaption>{escape(caption)}</figcaption></figure>" for caption, png in timelines)


def render_taps(report: TapsReport) -> str:
    """The whole HTML page of a taps command."""
    sections = [
        section("overview", "Overview", table([], report.facts, text_columns=1)
                + "".join(note(text) for text in report.notes)),
        section("recordings", "Per recording", table(report.recording_header, report.recordings)
                if report.recordings else note("no recording")),
        section("timelines", "Timelines", _timelines(report.timelines)),
    ]
    return page(report.title, report.source, sections)
