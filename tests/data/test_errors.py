"""One way to name bad inputs: every problem counted, the first LISTED named one per line, and --on_error's rule."""
from __future__ import annotations

import pytest

from audiotune.data.errors import LISTED, DataError, refuse, refuse_unless_skipped


def test_an_error_names_the_first_problems_and_counts_the_rest() -> None:
    problems = [f"f{i}.wav: not found" for i in range(LISTED + 3)]
    with pytest.raises(DataError) as raised:
        refuse(problems, "audio file(s) cannot be used", "(a hint)")
    lines = str(raised.value).splitlines()
    assert lines[0] == f"{LISTED + 3} audio file(s) cannot be used:"
    assert lines[1:-2] == [f"  f{i}.wav: not found" for i in range(LISTED)]
    assert lines[-2:] == ["  ... and 3 more", "(a hint)"]
    refuse([], "nothing")  # no problem, no error
    with pytest.raises(DataError, match=r"^2 x:\n  a\n  b$"):
        refuse(["a", "b"], "x")


def test_on_error_raise_names_the_skip_list_and_skip_leaves_the_problems_to_the_command() -> None:
    with pytest.raises(DataError, match=r"^1 row\(s\) bad:\n  r1\n\(use --on_error skip to leave them out; they "
                                        r"are then listed in out\.skipped\.csv\)$"):
        refuse_unless_skipped(["r1"], "row(s) bad", "raise", "out.skipped.csv")
    refuse_unless_skipped(["r1"], "row(s) bad", "skip", "out.skipped.csv")
    with pytest.raises(DataError, match="--on_error 'ignore': choose one of raise, skip"):
        refuse_unless_skipped([], "row(s) bad", "ignore", "out.skipped.csv")
