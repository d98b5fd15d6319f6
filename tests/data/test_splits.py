"""data/splits.py: a part drawn by fraction from a handful of subjects holds at least one of them."""
from __future__ import annotations

import pandas as pd
import pytest

from audiotune.data.errors import DataError
from audiotune.data.splits import split_table


def _speakers(count: int, digits: int = 3) -> pd.DataFrame:
    rows = [{"uid": f"{d}_{s}_{t}", "subject": f"s{s}", "digit": d}
            for s in range(count) for d in range(digits) for t in range(2)]
    return pd.DataFrame(rows).set_index("uid")


def test_the_default_fractions_split_six_speakers() -> None:
    parts = split_table(_speakers(6), stratify="digit", seed=0)  # 0.2 / 0.1: fewer than one speaker for val
    subjects = {name: set(part["subject"]) for name, part in parts.items()}
    assert [len(subjects[name]) for name in ("test", "val")] == [2, 1] and len(subjects["train"]) == 3
    assert set.union(*subjects.values()) == {f"s{s}" for s in range(6)}
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"])
    assert split_table(_speakers(6), stratify="digit", seed=0)["val"].equals(parts["val"])  # seeded


def test_many_speakers_keep_the_fractions() -> None:
    parts = split_table(_speakers(40), seed=1)
    assert [parts[name]["subject"].nunique() for name in ("train", "val", "test")] == [28, 4, 8]


def test_a_fraction_with_one_speaker_left_names_the_flag() -> None:
    with pytest.raises(DataError, match=r"--val_fraction 0.1 \(after the test part\).*only 1 value.*"
                                        r"--val_fraction 0"):
        split_table(_speakers(2), seed=0)
