"""tap2key sample folders: pairs per recording, or the recordings that cannot be paired, named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audiotune.data.errors import DataError
from audiotune.engine.seed_taps import import_tap_samples


def test_samples_pair_with_their_recordings_labels_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    (folder / "05.wav_samples").mkdir(parents=True)
    (folder / "04.labels").mkdir()
    for take, taps in (("t1", 3), ("t2", 1)):
        for i in reversed(range(taps)):  # written in any order; read in tap order
            sf.write(folder / "05.wav_samples" / f"{take}_{i:03}_8chan.wav", np.zeros((64, 8)), 96000)
    (folder / "04.labels" / "t1_label.csv").write_text("t0,a,1,2,9\nt1,b,3,4,9\nt2,c,5,6,9\n")
    (folder / "04.labels" / "t3_label.csv").write_text("t0,z,1,2,9\n")  # labels without samples
    with pytest.raises(DataError, match="2 recording\\(s\\) whose tap samples and labels cannot be paired"):
        import_tap_samples([folder], tmp_path / "out.csv")
    done = import_tap_samples([folder], tmp_path / "out.csv", on_error="skip")
    assert done.segments[["uid", "label", "x"]].values.tolist() == [["t1_000", "a", "1"], ["t1_001", "b", "3"],
                                                                     ["t1_002", "c", "5"]]
    skipped = pd.read_csv(tmp_path / "out.skipped.csv")
    assert skipped["reason"].tolist() == ["1 tap samples, 0 labels (no label CSV)", "0 tap samples, 1 labels"]
    with pytest.raises(DataError, match="no 05.wav_samples/ folder"):
        import_tap_samples([tmp_path], tmp_path / "x.csv")


def test_one_take_in_two_folders_is_refused_naming_its_uids_and_folders(tmp_path: Path) -> None:
    for name in ("s1", "s1b"):  # two copies of one recording folder
        folder = tmp_path / name
        (folder / "05.wav_samples").mkdir(parents=True)
        (folder / "04.labels").mkdir()
        for i in range(2):
            sf.write(folder / "05.wav_samples" / f"t1_{i:03}_8chan.wav", np.zeros((64, 8)), 96000)
        (folder / "04.labels" / "t1_label.csv").write_text("t0,a,1,2,9\nt1,b,3,4,9\n")
    with pytest.raises(DataError, match="2 tap sample uid\\(s\\) found more than once") as raised:
        import_tap_samples([tmp_path / "s1", tmp_path / "s1b"], tmp_path / "out.csv")
    assert f"t1_000: in {tmp_path / 's1'}, {tmp_path / 's1b'}" in str(raised.value)
    assert not (tmp_path / "out.csv").exists()
    assert len(import_tap_samples([tmp_path / "s1"], tmp_path / "out.csv").segments) == 2
