"""The taps page: the counts, one row per recording, each timeline inline as a PNG."""
from __future__ import annotations

import base64
import re

from audiotune.report.taps_page import TapsReport, render_taps

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


def test_every_timeline_is_inline_with_its_caption() -> None:
    report = TapsReport("taps aligned: s.csv", "/out/s.csv", [["latency", "-140.0 ms (estimated)"], ["matched", 3]],
                        ["recording", "taps"], [["a.wav", 2], ["b.wav", 1]],
                        [("a.wav: 2 of 2 taps matched", PNG), ("b.wav: 1 of 1 taps matched", PNG[::-1])],
                        ["time error of the matches: median +0.1 ms"])
    page = render_taps(report)
    assert re.findall(r'<section id="([^"]+)">', page) == ["overview", "recordings", "timelines"]
    assert "<td class=text>latency</td><td>-140.0 ms (estimated)</td>" in page and "median +0.1 ms" in page
    images = re.findall(r'<img[^>]*alt="([^"]+)"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert [(alt, base64.b64decode(data)) for alt, data in images] == [
        ("a.wav: 2 of 2 taps matched", PNG), ("b.wav: 1 of 1 taps matched", PNG[::-1])]
    assert page.count("<figcaption>") == 2


def test_nothing_to_draw_is_said() -> None:
    page = render_taps(TapsReport("taps detected: t.csv", "/t.csv", [["taps detected", 0]], ["recording"], []))
    assert "no recording to draw" in page and "no recording</p>" in page and "<img" not in page


def test_recordings_that_share_a_file_name_are_labelled_by_the_shortest_path_that_tells_them_apart() -> None:
    from audiotune.report.taps_page import distinct_names

    assert distinct_names(["a/r.wav", "b/r.wav", "c/s.wav"]) == {"a/r.wav": "a/r.wav", "b/r.wav": "b/r.wav",
                                                                  "c/s.wav": "s.wav"}
    assert distinct_names(["/d/x/a/r.wav", "/d/y/a/r.wav"]) == {"/d/x/a/r.wav": "x/a/r.wav",
                                                                "/d/y/a/r.wav": "y/a/r.wav"}
    assert distinct_names(["r.wav", "a/r.wav"]) == {"r.wav": "r.wav", "a/r.wav": "a/r.wav"}  # one ends the other
