"""tap2key sample folders: pairs per recording, or the recordings that cannot be paired, named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import save_to_disk

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


@pytest.mark.parametrize("audio_feature", [False, True])
def test_the_flat_folder_and_the_test_split_the_seed_saved_read_as_the_same_taps(tmp_path: Path,
                                                                                  audio_feature: bool) -> None:
    """create_dataset.py read one flat folder of samples and label CSVs (its --data_dir) and saved its test split
    with save_to_disk, the samples' paths in it: the split's rows are those taps, under the uids and class names of
    the folder's rows, wherever the samples are now (--audio_dir)."""
    data_dir = tmp_path / "00.All_TapsLabels_96k"
    data_dir.mkdir()
    for i in range(4):
        sf.write(data_dir / f"t1_{i:03}_8chan.wav", np.zeros((64, 8)), 96000)
    (data_dir / "t1_label.csv").write_text("t0,q,1,2,9\nt1,w,3,4,9\nt2,q,5,6,9\nt3,e,7,8,9\n")
    everything = import_tap_samples([data_dir], tmp_path / "all.csv").segments.set_index("uid")
    seed_dir = "/work/ajgeglio/Tap_Data/00.All_TapsLabels_96k"  # where the seed's samples were
    saved = save_to_disk(tmp_path / "04.Test_Dataset_96k", [f"{seed_dir}/t1_003_8chan.wav",
                                                            f"{seed_dir}/t1_000_8chan.wav"], [0, 1], ["e", "q", "w"],
                         audio_feature)
    with pytest.raises(DataError, match=r"2 tap sample\(s\) of the split saved in .*04.Test_Dataset_96k not found:"
                                        r"[\s\S]*t1_003_8chan.wav[\s\S]*give --audio_dir FOLDER"):
        import_tap_samples([saved], tmp_path / "test.csv")
    test = import_tap_samples([saved], tmp_path / "test.csv", audio_dir=data_dir).segments
    assert test[["uid", "label", "split"]].values.tolist() == [["t1_003", "e", "04.Test_Dataset_96k"],
                                                               ["t1_000", "q", "04.Test_Dataset_96k"]]
    assert test["path"].tolist() == everything.loc[test["uid"], "path"].tolist()
    assert test["label"].tolist() == everything.loc[test["uid"], "label"].tolist()


def test_an_encoded_split_without_its_samples_is_refused_naming_what_to_import(tmp_path: Path) -> None:
    """--encode saved input_values only: no sample to read, said with what to import instead."""
    import json

    import pyarrow as pa

    folder = save_to_disk(tmp_path / "09.Encoded_Dataset_Test", ["x.wav"], [0], ["q"], False)
    table = pa.table({"label": pa.array([0], pa.int64()), "input_values": pa.array([[0.1, 0.2]])})
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(DataError, match=r"09.Encoded_Dataset_Test: no audio column \(found label, input_values\).*"
                                        r"--encode kept only input_values"):
        import_tap_samples([folder], tmp_path / "test.csv")
    assert json.loads((folder / "state.json").read_text())["_data_files"]
    assert not (tmp_path / "test.csv").exists()
