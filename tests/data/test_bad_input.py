"""Bad input gives a clear error naming the file or field, directly and through `audiotune train`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import SMALL_ECAPA, tone

from audiotune.cli import main
from audiotune.data.audio import AudioError, AudioSpec, check_clip, load_clip
from audiotune.data.checked_audio import scan_audio
from audiotune.data.errors import DataError
from audiotune.data.labels import encode_targets, infer_heads, read_label_file
from audiotune.data.layout import attach_paths, resolve_uid


def train_args(ds: dict, out: Path, *extra: str) -> list[str]:
    return ["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
            "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "1", "-bs", "4", "--seed", "3", *extra]


def train_error(ds: dict, out: Path, capsys, *extra: str) -> str:
    """Run `audiotune train`, expect exit status 2, return stderr."""
    assert main(train_args(ds, out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("audiotune train: error: "), err
    return err


def wav(ds: dict, uid: str) -> Path:
    return ds["prefix"] / uid / "waveform.wav"


def edit_split(ds: dict, name: str, **changes) -> None:
    """Set ``changes[column] = {uid: value}`` in one split CSV."""
    path = ds["split"] / f"{name}.csv"
    table = pd.read_csv(path).set_index("uid")
    for column, values in changes.items():
        if column in table.columns and table[column].dtype != object:
            table[column] = table[column].astype(object)
        for uid, value in values.items():
            table.loc[uid, column] = value
    table.to_csv(path)


# ---------------------------------------------------------------- audio files

def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.wav"
    with pytest.raises(AudioError, match="nowhere.wav: file not found"):
        load_clip(str(path), AudioSpec())
    path.mkdir()  # a folder named as audio is there, but is not a file
    with pytest.raises(AudioError, match="nowhere.wav: a folder, not an audio file"):
        load_clip(str(path), AudioSpec())


@pytest.mark.parametrize("content", [b"this is not audio" * 50, b""], ids=["garbage", "zero-bytes"])
def test_unreadable_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=f"{path}: cannot decode audio"):
        load_clip(str(path), AudioSpec())


def test_empty_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty.wav: empty audio \(0 samples\)"):
        load_clip(str(path), AudioSpec())


def test_all_zero_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros((800, 2), dtype=np.float32), 8000)
    with pytest.raises(AudioError, match="silent.wav: audio is all zeros"):
        load_clip(str(path), AudioSpec())


def test_a_clip_silent_where_the_crop_reads_says_so(tmp_path: Path) -> None:
    """Two silent seconds before speech, cropped to one: "audio is all zeros" named a file that is not."""
    path = tmp_path / "late.wav"
    sf.write(path, np.concatenate([np.zeros(16000, dtype=np.float32), tone(300, 0.5, 8000)]), 8000)
    with pytest.raises(AudioError, match=r"late.wav: audio is all zeros in its first [\d.]+ s, all the "
                                         r"--clip_length crop reads"):
        check_clip(str(path), AudioSpec(resample_rate=8000, clip_length=1.0))
    assert check_clip(str(path), AudioSpec(resample_rate=8000, clip_length=0)) == 20000


def test_channels_that_cancel_in_the_mean_the_model_reads_are_silence(tmp_path: Path) -> None:
    """A stereo file whose channels are each other's negative was checked channel by channel and scored as a
    clip, though the model read its mean: all zeros."""
    path = tmp_path / "antiphase.wav"
    signal = tone(300, 0.3, 8000)
    sf.write(path, np.stack([signal, -signal], axis=1), 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="audio is all zeros"):
        check_clip(path, AudioSpec())
    assert check_clip(path, AudioSpec(channel_mode="maxabs")) > 0  # the louder channel is not silent


def test_float_samples_far_above_full_scale_are_not_audio(tmp_path: Path) -> None:
    """A float WAV of 1e30 samples passed the check and its features overflowed: NaN scores and embeddings."""
    from audiotune.data.audio import LOUDEST, check_clip

    path = tmp_path / "loud.wav"
    sf.write(path, np.full(8000, 1e30, dtype=np.float32), 16000, subtype="FLOAT")
    for read in (load_clip, check_clip):
        with pytest.raises(AudioError, match=r"loud.wav: samples up to 1e\+30, where audio is at most about 1"):
            read(str(path), AudioSpec())
    sf.write(path, np.full(8000, LOUDEST / 2, dtype=np.float32), 16000, subtype="FLOAT")  # loud, still read
    assert load_clip(str(path), AudioSpec())[0].max() == LOUDEST / 2
    for bad in (np.nan, np.inf, -np.inf):  # one sample among ordinary ones
        samples = np.full(8000, 0.1, dtype=np.float32)
        samples[4000] = bad
        sf.write(path, samples, 16000, subtype="FLOAT")
        for read in (load_clip, check_clip):
            with pytest.raises(AudioError, match="loud.wav: audio contains NaN or infinite samples"):
                read(str(path), AudioSpec())


def test_non_finite_samples_are_said_as_such_with_the_segment_they_are_in(tmp_path: Path) -> None:
    """The streamed check said a NaN as a decoding error naming the file twice ("x.wav: cannot decode audio (x.wav:
    audio contains NaN ...)"), and a segment's bad sample without the segment among a file's many rows."""
    from audiotune.data.audio import Span, check_clip

    path = tmp_path / "nan.wav"
    samples = np.full(16000, 0.1, dtype=np.float32)
    samples[12000] = np.nan
    sf.write(path, samples, 8000, subtype="FLOAT")
    for read in (load_clip, check_clip):
        with pytest.raises(AudioError) as caught:
            read(str(path), AudioSpec(clip_length=0))
        assert str(caught.value) == f"{path}: audio contains NaN or infinite samples"
        with pytest.raises(AudioError) as caught:
            read(str(path), AudioSpec(clip_length=0), span=Span(offset=1.0, duration=0.75))
        assert str(caught.value) == f"{path}: audio contains NaN or infinite samples in this segment (1 s to 1.75 s)"
    assert check_clip(str(path), AudioSpec(clip_length=0, resample_rate=0), span=Span(offset=0.0, duration=1.0)) == \
        8000


def test_wrong_sample_rate_in_metadata(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    folder = uid_dataset["prefix"] / "bob1"
    (folder / "metadata.json").write_text(json.dumps({"encoding": "WAV", "sample_rate_hz": 16000}))
    path, rate = resolve_uid("bob1", str(uid_dataset["prefix"]))
    with pytest.raises(AudioError, match="waveform.wav: sample rate is 8000 Hz but metadata.json says "
                                         "sample_rate_hz=16000"):
        load_clip(path, AudioSpec(), rate)
    err = train_error(uid_dataset, tmp_path, capsys)
    assert str(folder / "waveform.wav") in err and "sample_rate_hz=16000" in err


def test_missing_metadata(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    meta = uid_dataset["prefix"] / "cat2" / "metadata.json"
    meta.unlink()
    with pytest.raises(DataError, match="metadata.json not found"):
        resolve_uid("cat2", str(uid_dataset["prefix"]))
    assert str(meta) in train_error(uid_dataset, tmp_path, capsys)


@pytest.mark.parametrize("uid", ["../x", "ann0/../../x", "/etc"])
def test_uid_escaping_the_prefix(uid_dataset: dict, uid: str) -> None:
    with pytest.raises(DataError, match=f"uid '{uid}': escapes the audio root"):
        resolve_uid(uid, str(uid_dataset["prefix"]))
    outside = str(uid_dataset["root"] / "elsewhere")
    with pytest.raises(DataError, match="escapes the audio root"):
        resolve_uid(outside, str(uid_dataset["prefix"]))


def test_uid_rows_need_a_prefix() -> None:
    table = pd.DataFrame({"y": [0]}, index=pd.Index(["ann0"], name="uid"))
    table.attrs["source"] = "split/test.csv"
    with pytest.raises(DataError, match=r"^split/test.csv: no 'path' column, so its rows are uids of the seed "
                                        r"layout \(PREFIX\[/STUDY\]/UID/waveform.EXT\): give their audio root with "
                                        r"-i/--prefix"):
        attach_paths(table, "")


def test_uid_rows_none_of_which_is_under_the_prefix_name_the_root_not_each_row(
        uid_dataset: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative prefix read from another folder finds none of the uids: the error names the root as it was
    resolved and asks for -i/--prefix, not for leaving every row out; one uid found keeps the others as failures."""
    table = uid_dataset["table"].head(3).copy()
    table.attrs["source"] = "split/test.csv"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^split/test.csv: none of its 3 uid\(s\) can be read under the audio root "
                                        rf"lake \(from {tmp_path}: {tmp_path / 'lake'}\): give the folder holding "
                                        r"the uid folders with -i/--prefix:\n  "):
        attach_paths(table, "lake")
    ghost = pd.concat([table.head(1), table.head(1).rename(index=lambda _: "ghost")])
    kept, failures = attach_paths(ghost, str(uid_dataset["prefix"]))
    assert len(kept) == 1 and failures["uid"].tolist() == ["ghost"]


def test_scan_lists_every_bad_file(tmp_path: Path) -> None:
    good, silent = tmp_path / "good.wav", tmp_path / "silent.wav"
    sf.write(good, tone(300, 0.2, 8000), 8000)
    sf.write(silent, np.zeros(100, dtype=np.float32), 8000)
    table = pd.DataFrame({"path": [str(good), str(silent), str(tmp_path / "gone.wav")], "expected_rate": np.nan},
                         index=pd.Index(["g", "s", "m"], name="uid"))
    kept, failures = scan_audio(table, AudioSpec(), "train")
    assert kept.index.tolist() == ["g"] and kept["num_samples"].tolist() == [3200]
    assert failures["uid"].tolist() == ["s", "m"] and (failures["split"] == "train").all()
    assert "all zeros" in failures["reason"][0] and "file not found" in failures["reason"][1]


def test_a_bad_segment_cell_is_named_by_its_file_and_row(tmp_path: Path) -> None:
    """An offset that is not a number said only "offset 'abc': not a number of seconds", naming no file or row."""
    good = tmp_path / "good.wav"
    sf.write(good, tone(300, 0.5, 8000), 8000)
    table = pd.DataFrame({"path": [str(good)] * 2, "offset": ["0", "abc"], "duration": ["0.2", "0.2"],
                          "expected_rate": np.nan}, index=pd.Index(["fine", "typo"], name="uid"))
    kept, failures = scan_audio(table, AudioSpec(), "test")
    assert kept.index.tolist() == ["fine"]
    assert failures["reason"].tolist() == [f"{good} (uid typo): offset 'abc': not a number of seconds"]


# ---------------------------------------------------------------- label files and targets

@pytest.mark.parametrize("text", ["", "\n  \n", " , ,\n", "pitch\n,,\n"], ids=["empty", "blank", "commas", "line"])
def test_label_file_naming_nothing(tmp_path: Path, text: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=f"{path}.*names no column"):
        read_label_file(path)


def test_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.txt: label file not found"):
        read_label_file(tmp_path / "nope.txt")


def test_label_file_with_a_byte_order_mark_or_in_another_encoding(tmp_path: Path) -> None:
    """An editor's UTF-8 byte-order mark became part of the first column's name ('\\ufeffpitch' not in the
    table); a Latin-1 file was an error naming no file."""
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffpitch\nloud,long\n".encode())
    assert [group.columns for group in read_label_file(path)] == [["pitch"], ["loud", "long"]]
    path.write_bytes("débit\n".encode("latin-1"))
    with pytest.raises(DataError, match=f"{path}: label file is not UTF-8 text"):
        read_label_file(path)


def test_empty_label_file_through_the_cli(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    uid_dataset["labels"].write_text(" ,\n")
    err = train_error(uid_dataset, tmp_path, capsys)
    assert str(uid_dataset["labels"]) in err and "names no column" in err


def test_unknown_label_columns(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    uid_dataset["labels"].write_text("pitch\nloud,mood\n")
    err = train_error(uid_dataset, tmp_path, capsys)
    assert "['mood']" in err and "train.csv" in err and "not in the table" in err


def test_categorical_column_sharing_a_line(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    uid_dataset["labels"].write_text("loud,pitch\n")
    err = train_error(uid_dataset, tmp_path, capsys)
    assert "column 'pitch'" in err and "a categorical column goes alone on its line" in err
    with pytest.raises(DataError, match=r"column 'pitch' of labels holds '(high|low)' besides 0 and 1"):
        infer_heads([["pitch", "loud"]], uid_dataset["table"])


def test_binary_column_with_value_two(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    heads = infer_heads([["loud", "long"]], uid_dataset["table"])
    test = uid_dataset["table"].loc[["fay0", "fay1"]].copy()
    test.loc["fay1", "long"] = 2
    with pytest.raises(DataError, match="test.csv: row 'fay1' column 'long' is 2, not 0/1"):
        encode_targets(test, heads, "test.csv")
    edit_split(uid_dataset, "val", loud={"eve3": 2})
    err = train_error(uid_dataset, tmp_path, capsys)
    assert "val.csv" in err and "'eve3'" in err and "'loud'" in err


def test_class_unseen_in_training(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    edit_split(uid_dataset, "test", pitch={"fay2": "mid"})
    err = train_error(uid_dataset, tmp_path, capsys)
    assert "test.csv" in err and "'pitch'" in err and "['mid']" in err and "not seen in training" in err


# ---------------------------------------------------------------- through `audiotune train`

def test_broken_file_fails_training_naming_it(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    wav(uid_dataset, "bob1").write_bytes(b"RIFF garbage" * 20)
    err = train_error(uid_dataset, tmp_path, capsys)
    assert str(wav(uid_dataset, "bob1")) in err and "--on_error skip" in err
    assert not (tmp_path / "model.safetensors").exists()


def test_a_class_whose_every_training_clip_is_skipped_is_an_error_as_if_it_were_absent(uid_dataset: dict,
                                                                                      tmp_path: Path, capsys) -> None:
    """--on_error skip leaves bad audio out, not the label checks: a class left without a training clip (here
    every 'high' clip of train) is refused as the split without those rows would be, naming why its rows went."""
    high = [f"{subject}{k}" for subject in ("ann", "bob", "cat", "dan") for k in (1, 3)]
    for uid in high:
        wav(uid_dataset, uid).write_bytes(b"")
    err = train_error(uid_dataset, tmp_path / "run", capsys, "--on_error", "skip")
    assert "train.csv: column 'pitch' keeps no training clip of ['high'] once these rows are left out" in err
    assert all(str(wav(uid_dataset, uid).resolve()) in err for uid in high)
    assert not (tmp_path / "run").exists()
    wav(uid_dataset, "ann1").write_bytes(wav(uid_dataset, "ann0").read_bytes())  # one 'high' clip left: trains
    args = train_args(uid_dataset, tmp_path / "run", "--on_error", "skip", "-e", "0")
    assert main(args) == 0 and len(pd.read_csv(tmp_path / "run" / "skipped.csv")) == 7


def test_a_class_whose_training_rows_validation_draws_or_overlap_leaves_out_is_refused_naming_them(
        uid_dataset: dict, tmp_path: Path, capsys) -> None:
    """Validation drawn from train (--val_size, --val_share) and --allow_overlap take rows from training after the
    heads are read from it: a class they take wholly is refused as a split without it would be, not trained as a
    head output that never sees a clip (balanced weight 1.0)."""
    edit_split(uid_dataset, "train", pitch={f"dan{k}": "mid" for k in range(4)})  # 'mid': subject dan's only
    (uid_dataset["split"] / "val.csv").unlink()
    err = train_error(uid_dataset, tmp_path / "run", capsys, "--val_size", "1", "--seed", "0")  # draws dan
    assert "train.csv: column 'pitch' keeps no training clip of ['mid'] once these rows are left out" in err
    assert "dan0: drawn into validation (--val_size 1 subject(s), --seed 0)" in err and "another --seed" in err
    assert not (tmp_path / "run").exists()
    args = train_args(uid_dataset, tmp_path / "run", "--val_size", "1", "--seed", "1", "-e", "0")  # draws bob
    assert main(args) == 0
    capsys.readouterr()
    eve = pd.read_csv(uid_dataset["split"] / "test.csv").assign(uid=lambda t: t.uid.str.replace("fay", "eve"))
    eve.assign(subject="dan").to_csv(uid_dataset["split"] / "val.csv", index=False)  # shares subject dan
    err = train_error(uid_dataset, tmp_path / "overlap", capsys, "--allow_overlap")
    assert "keeps no training clip of ['mid']" in err and "dan3: subject also in val" in err
    assert not (tmp_path / "overlap").exists()


@pytest.mark.slow
def test_skip_bad_audio_and_drop_rows_without_targets(uid_dataset: dict, tmp_path: Path) -> None:
    ds = uid_dataset
    wav(ds, "bob1").write_bytes(b"RIFF garbage" * 20)  # train: unreadable
    wav(ds, "eve2").unlink()  # val: missing
    sf.write(wav(ds, "fay3"), np.zeros(4000, dtype=np.float32), 8000)  # test: silent
    edit_split(ds, "train", loud={"ann3": np.nan}, long={"ann3": np.nan}, pitch={"ann3": np.nan})  # no target
    edit_split(ds, "test", pitch={"fay0": np.nan})  # partly labelled: kept for the binary head
    assert main(train_args(ds, tmp_path, "--on_error", "skip")) == 0

    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert list(skipped.columns) == ["uid", "split", "path", "reason"]
    assert skipped[["uid", "split"]].values.tolist() == [["bob1", "train"], ["eve2", "val"], ["fay3", "test"]]
    assert skipped["path"].tolist() == [str(wav(ds, u).resolve()) for u in ("bob1", "eve2", "fay3")]
    reasons = skipped["reason"].tolist()
    assert "cannot decode" in reasons[0] and "file not found" in reasons[1] and "all zeros" in reasons[2]
    assert all(str(path) in reason for path, reason in zip(skipped["path"], reasons))

    dropped = pd.read_csv(tmp_path / "dropped_rows.csv")
    assert dropped[["uid", "split"]].values.tolist() == [["ann3", "train"]]
    assert "no target for any head" in dropped["reason"][0]

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val"]["n"] == 3 and metrics["test"]["n"] == 3
    assert metrics["test"]["heads"]["pitch"]["n"] == 2 and metrics["test"]["heads"]["loud+long"]["n"] == 3
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert not set(predictions["uid"]) & {"bob1", "eve2", "fay3", "ann3"}
    assert pd.isna(predictions.set_index("uid").loc["fay0", "true:pitch"])


@pytest.mark.slow
def test_missing_metadata_is_skipped_and_listed(uid_dataset: dict, tmp_path: Path) -> None:
    (uid_dataset["prefix"] / "cat2" / "metadata.json").unlink()
    args = ["train", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]),
            "-l", str(uid_dataset["labels"]),
            "-o", str(tmp_path), *SMALL_ECAPA, "-e", "1", "-bs", "4", "--on_error", "skip"]
    assert main(args) == 0
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert skipped["uid"].tolist() == ["cat2"] and "metadata.json not found" in skipped["reason"][0]


def test_an_empty_uid_cell_is_named_by_its_line(tmp_path: Path) -> None:
    """One empty uid cell was read as the uid 'nan' (two as duplicates of 'nan')."""
    from audiotune.data.layout import read_table

    (tmp_path / "t.csv").write_text("uid,path\na,a.wav\n,b.wav\n,c.wav\n")
    with pytest.raises(DataError, match=r"t.csv: empty 'uid' cell on line\(s\) \[3, 4\]; every row needs its uid"):
        read_table(tmp_path / "t.csv")
