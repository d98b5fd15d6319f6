"""Bad rows are named by their line in the file, blank lines and cells that span lines counted."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from conftest import tone

from audiotune.cli import main
from audiotune.data.errors import DataError
from audiotune.data.layout import FileLines, read_table
from audiotune.data.segments import segment_csv
from audiotune.taps.align_inputs import read_keys, read_taps

# line 1 header, 2 blank, 3 a, 4 spaces only, 5-6 one quoted cell over two lines, 7 an empty row, 8 b, 9 a quoted
# empty cell (a row too), 10 blank
TEXT = 'uid,note\n\na,x\n   \n"c","two\nlines"\n,\nb,y\n""\n\n'


def test_rows_are_numbered_by_the_line_they_begin_on(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(TEXT)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert table["uid"].tolist() == ["a", "c", "", "b", ""]  # the rows pandas reads, which the lines must match
    assert FileLines(path).of(range(5)) == [3, 5, 7, 8, 9]
    assert FileLines(path, header=False).of(range(6)) == [1, 3, 5, 7, 8, 9]
    assert FileLines(tmp_path / "gone.csv").of([0, 3]) == [2, 5]  # unreadable: as if without blank lines


def test_an_empty_uid_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(TEXT)
    with pytest.raises(DataError, match=r"empty 'uid' cell on line\(s\) \[7, 9\]"):
        read_table(path)


def test_split_names_the_line_of_an_empty_stratify_cell(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = tmp_path / "m.csv"
    rows = [f"{i}.wav,s{i % 3},{'' if i == 4 else 'k'}" for i in range(6)]
    table.write_text("path,subject,label\n\n" + "\n\n".join(rows) + "\n")  # a blank line before each row
    assert main(["split", str(table), "--out", str(tmp_path / "split"), "--stratify", "label"]) == 2
    assert f"{table}: empty 'label' cell on 1 line(s) [11];" in capsys.readouterr().err  # row 5, after 5 blanks


def test_segment_names_the_lines_of_bad_and_skipped_events(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", tone(440, 1.0, 16000), 16000)
    events = tmp_path / "events.csv"
    events.write_text("path,time\n\na.wav,0.5\n\na.wav,soon\n")
    with pytest.raises(DataError, match=r"events.csv line 5: time 'soon' is not a number"):
        segment_csv(events, tmp_path / "out.csv", before=0.1, after=0.1)
    events.write_text("path,time\n\na.wav,0.5\n\nmissing.wav,0.5\n")
    segment_csv(events, tmp_path / "out.csv", before=0.1, after=0.1, on_error="skip")
    assert pd.read_csv(tmp_path / "out.skipped.csv")["line"].tolist() == [5]


def test_tap_tables_name_their_lines(tmp_path: Path) -> None:
    taps, keys = tmp_path / "taps.csv", tmp_path / "keys.csv"
    taps.write_text("path,time\n\nr.wav,0.5\n\nr.wav,late\n")
    with pytest.raises(DataError, match=r"'time' is not a number >= 0 on line\(s\) \[5\]"):
        read_taps(taps)
    keys.write_text("x,y,label\n\n1,2,a\n\n1,oops,b\n")
    with pytest.raises(DataError, match=r"x or y not a number on line\(s\) \[5\]"):
        read_keys(str(keys))
