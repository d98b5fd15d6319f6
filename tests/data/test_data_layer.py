"""Data layer with real files: decoding, layouts, labels, and the manifest / split / stats commands."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import BUCKET, SMALL_ECAPA, tone

from audiotune.cli import build_parser, config_from_args, main
from audiotune.data.audio import AudioError, AudioSpec, check_clip, load_clip, prepared_length
from audiotune.data.errors import DataError
from audiotune.data.features import kaldi_fbank
from audiotune.data.labels import infer_heads
from audiotune.data.layout import read_table, resolve_uid
from audiotune.data.prepare import prepare_training_data, split_overlaps
from audiotune.data.splits import draw_validation
from audiotune.models.backbones import input_spec


def train_args(data: list[str], out: Path, *extra: str) -> list[str]:
    return ["train", *data, "-o", str(out), "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "1", "-bs", "4",
            "--seed", "3", *extra]


def prepare(argv: list[str], exp_dir: Path):
    """Parse `audiotune train` flags and run only the data preparation of training."""
    config = config_from_args(build_parser().parse_args(["train", *argv, "-o", str(exp_dir)]))
    exp_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_training_data(config, input_spec(config), exp_dir)
    assert not any(exp_dir.iterdir()), "preparing the data writes nothing"
    prepared.write_reports(exp_dir)
    return prepared


# ---------------------------------------------------------------- decoding

@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_every_container_decodes(tmp_path: Path, fmt: str) -> None:
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) has no {fmt} support")
    wave = tone(440, 1.0, 16000)
    path = tmp_path / f"clip.{fmt.lower()}"
    try:
        sf.write(path, wave, 16000, format=fmt)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        if fmt == "MP3":
            pytest.skip(f"writing MP3 needs libsndfile >= 1.1 with LAME (have {sf.__libsndfile_version__}: {err})")
        raise
    clip, rate = load_clip(str(path), AudioSpec())
    assert rate == 16000 and clip.dtype == np.float32 and np.isfinite(clip).all()
    assert abs(len(clip) - len(wave)) <= 0.05 * len(wave)  # lossy codecs may pad a little
    n = min(len(clip), len(wave))
    if fmt in ("WAV", "FLAC"):
        np.testing.assert_allclose(clip, wave, atol=1e-4)
    else:
        assert np.corrcoef(clip[:n], wave[:n])[0, 1] > 0.95  # lossy, but the same signal


def test_three_channels_are_mixed_by_mean_or_sum(tmp_path: Path) -> None:
    wave = tone(300, 0.5, 16000, channels=3)
    path = tmp_path / "three.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    mean, _ = load_clip(str(path), AudioSpec())
    total, _ = load_clip(str(path), AudioSpec(channel_mode="sum"))
    np.testing.assert_allclose(mean, wave.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(total, wave.sum(axis=1), atol=1e-6)
    np.testing.assert_allclose(total, 3 * mean, atol=1e-5)


def test_multichannel_without_a_channel_mode_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    sf.write(path, tone(300, 0.3, 16000, channels=2), 16000)
    with pytest.raises(AudioError, match="stereo.wav.*2 channels.*--channel_mode"):
        load_clip(str(path), AudioSpec(channel_mode="none"))
    with pytest.raises(AudioError, match="stereo.wav"):
        check_clip(str(path), AudioSpec(channel_mode="none"))
    mono = tmp_path / "mono.wav"
    sf.write(mono, tone(300, 0.3, 16000), 16000)
    assert len(load_clip(str(mono), AudioSpec(channel_mode="none"))[0]) == 4800


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("num_samples", [401, 4410, 12345])
def test_prepared_length_matches_the_resampled_clip(tmp_path: Path, rate: int, num_samples: int) -> None:
    path = tmp_path / "clip.wav"
    wave = tone(250, 2.0, rate)[:num_samples]
    assert len(wave) == num_samples
    sf.write(path, wave, rate)
    specs = (AudioSpec(clip_length=0), AudioSpec(clip_length=0.2), AudioSpec(resample_rate=0, clip_length=0),
             AudioSpec(resample_rate=0, clip_length=0.05))
    for spec in specs:
        clip, out_rate = load_clip(str(path), spec)
        assert out_rate == (spec.resample_rate or rate)
        assert len(clip) == prepared_length(num_samples, rate, spec) == check_clip(str(path), spec)
    if rate == 8000:
        assert len(load_clip(str(path), AudioSpec(clip_length=0))[0]) == 2 * num_samples


def test_clip_length_crops(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    wave = tone(300, 2.0, 16000)
    sf.write(path, wave, 16000, subtype="FLOAT")
    clip, _ = load_clip(str(path), AudioSpec(clip_length=0.5))
    assert len(clip) == 8000
    np.testing.assert_allclose(clip, wave[:8000], atol=1e-6)
    assert len(load_clip(str(path), AudioSpec(clip_length=5.0))[0]) == 32000


# ---------------------------------------------------------------- labels

def test_label_kinds_follow_the_column_values() -> None:
    table = pd.DataFrame({"sick": [0, 1, 1, 0], "word": ["yes", "no", "maybe", "no"], "grade": [2, 0, 1, 2]})
    sick, word, grade = infer_heads([["sick"], ["word"], ["grade"]], table)
    assert (sick.kind, sick.num_outputs) == ("binary", 1)
    assert (word.kind, word.classes) == ("categorical", ["maybe", "no", "yes"])
    assert (grade.kind, grade.classes) == ("categorical", ["0", "1", "2"])


def test_labels_read_from_a_csv_keep_their_kinds(uid_dataset: dict, tmp_path: Path) -> None:
    prepared = prepare(["-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]),
                        "-l", str(uid_dataset["labels"])], tmp_path / "run")
    pitch, loud_long = prepared.heads
    assert (pitch.kind, pitch.classes) == ("categorical", ["high", "low"])
    assert (loud_long.kind, loud_long.columns) == ("binary", ["loud", "long"])
    assert prepared.targets["train"].shape == (16, 4)


# ---------------------------------------------------------------- layouts

def _path_split(ds: dict, root: Path) -> Path:
    """A split directory whose CSVs address audio by a ``path`` column (one absolute, the rest relative)."""
    split = root / "by_path"
    split.mkdir()
    for name in ("train", "val", "test"):
        table = pd.read_csv(ds["split"] / f"{name}.csv")
        table["path"] = [f"../audio/{uid}/waveform.wav" for uid in table["uid"]]
        table.loc[0, "path"] = str(ds["prefix"] / table.loc[0, "uid"] / "waveform.wav")
        table.to_csv(split / f"{name}.csv", index=False)
    return split


@pytest.mark.slow
def test_path_manifests_train_and_evaluate_without_prefix(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    split = _path_split(uid_dataset, uid_dataset["root"])
    run = tmp_path / "run"
    assert main(train_args(["-d", str(split), "-l", str(uid_dataset["labels"])], run)) == 0
    assert json.loads((run / "metrics.json").read_text())["test"]["n"] == 4
    plain = tmp_path / "plain.csv"  # no uid column, paths relative to this CSV
    test = pd.read_csv(split / "test.csv")
    test["path"] = [str(Path("..") / uid_dataset["root"].name / "audio" / uid / "waveform.wav") for uid in test["uid"]]
    test.drop(columns="uid").to_csv(plain, index=False)
    assert main(["evaluate", "--run", str(run), "-d", str(plain), "-o", str(tmp_path / "eval")]) == 0, \
        capsys.readouterr().err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["data"]["n"] == 4


def test_read_table_resolves_relative_and_absolute_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    csv = tmp_path / "sub" / "m.csv"
    pd.DataFrame({"path": ["../a.wav", str(tmp_path / "b.wav")], "y": [0, 1]}).to_csv(csv, index=False)
    table = read_table(csv)
    assert table["path"].tolist() == [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]
    assert table.index.tolist() == ["../a.wav", str(tmp_path / "b.wav")]


def _no_val(ds: dict) -> Path:
    """The dataset's split directory with val.csv folded back into train.csv (five training subjects)."""
    split = ds["split"]
    pd.concat([pd.read_csv(split / "train.csv"), pd.read_csv(split / "val.csv")]).to_csv(split / "train.csv",
                                                                                            index=False)
    (split / "val.csv").unlink()
    return split


def test_validation_subjects_are_drawn_from_train_by_seed(uid_dataset: dict, tmp_path: Path) -> None:
    split = _no_val(uid_dataset)
    common = ["-i", str(uid_dataset["prefix"]), "-d", str(split), "-l", str(uid_dataset["labels"]), "--val_size", "2"]
    runs = {name: prepare([*common, "--seed", seed], tmp_path / name)
            for name, seed in (("a", "1"), ("b", "1"))}
    val_a = set(runs["a"].tables["val"]["subject"])
    assert len(val_a) == 2 and val_a == set(runs["b"].tables["val"]["subject"])
    assert not val_a & set(runs["a"].tables["train"]["subject"])
    assert set(runs["a"].tables["train"]["subject"]) | val_a == {"ann", "bob", "cat", "dan", "eve"}
    written = pd.read_csv(tmp_path / "a" / "validation.csv")
    assert sorted(written["uid"]) == sorted(runs["a"].tables["val"].index)
    train = read_table(split / "train.csv")
    draws = {frozenset(draw_validation(train, 2, seed)[1]["subject"]) for seed in range(8)}
    assert len(draws) > 1 and frozenset(val_a) == frozenset(draw_validation(train, 2, 1)[1]["subject"])


def test_val_size_too_large_is_a_clear_error(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    split = _no_val(uid_dataset)
    assert main(train_args(["-i", str(uid_dataset["prefix"]), "-d", str(split), "-l", str(uid_dataset["labels"])],
                           tmp_path, "--val_size", "5")) == 2
    err = capsys.readouterr().err
    assert err.startswith("audiotune train: error:") and "--val_size 5" in err and "(train has 5)" in err


def test_a_share_of_the_training_clips_validates_as_the_ser_seeds_valid_split(uid_dataset: dict,
                                                                              tmp_path: Path) -> None:
    split = _no_val(uid_dataset)
    common = ["-i", str(uid_dataset["prefix"]), "-d", str(split), "-l", str(uid_dataset["labels"])]
    seed_spelling = prepare([*common, "--valid_split", "0.8", "--seed", "1"], tmp_path / "seed")
    val, train = seed_spelling.tables["val"], seed_spelling.tables["train"]
    assert (len(val), len(train)) == (4, 16)  # a fifth of the 20 clips, not --val_size subjects
    assert set(val["subject"]) & set(train["subject"])  # single clips: subjects are not kept apart
    assert sorted(pd.read_csv(tmp_path / "seed" / "validation.csv")["uid"]) == sorted(val.index)
    same = prepare([*common, "--val_share", "0.2", "--seed", "1"], tmp_path / "share")
    assert sorted(same.tables["val"].index) == sorted(val.index)  # the same draw for the same seed
    draws = {frozenset(prepare([*common, "--val_share", "0.2", "--seed", str(seed)], tmp_path / str(seed))
                       .tables["val"].index) for seed in range(2, 6)}
    assert len(draws) > 1
    by_subject = prepare([*common, "--val_size", "1", "--seed", "1"], tmp_path / "subjects")
    assert len(set(by_subject.tables["val"]["subject"])) == 1
    whole = prepare([*common, "--valid_split", "1.0"], tmp_path / "whole")
    assert "val" not in whole.tables and len(whole.tables["train"]) == 20  # the seed's 1.0: no validation
    with pytest.raises(DataError, match="--val_share 0.99 of 20 training row"):
        prepare([*common, "--val_share", "0.99"], tmp_path / "all")


def test_val_size_0_trains_on_every_subject_without_validation(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    split = _no_val(uid_dataset)
    common = ["-i", str(uid_dataset["prefix"]), "-d", str(split), "-l", str(uid_dataset["labels"])]
    prepared = prepare([*common, "--val_size", "0"], tmp_path / "p")
    assert "val" not in prepared.tables and set(prepared.tables["train"]["subject"]) == {"ann", "bob", "cat", "dan",
                                                                                         "eve"}
    assert not (tmp_path / "p" / "validation.csv").exists()
    for flag, value in (("--patience", "2"), ("--monitor", "uar")):
        assert main(train_args(common, tmp_path / flag, "--val_size", "0", flag, value)) == 2
        assert f"{flag} need(s) validation" in capsys.readouterr().err
        assert not (tmp_path / flag).exists()  # refused before anything is written


def test_splits_sharing_subjects_or_uids_are_an_error_or_listed(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    split = uid_dataset["split"]
    pd.concat([pd.read_csv(split / "train.csv"), pd.read_csv(split / "val.csv")]).to_csv(split / "train.csv",
                                                                                            index=False)
    common = ["-i", str(uid_dataset["prefix"]), "-d", str(split), "-l", str(uid_dataset["labels"])]
    with pytest.raises(DataError, match=r"(?s)1 subject\(s\) of .*val.csv also in .*train.csv: \['eve'\].*uid\(s\)"):
        prepare(common, tmp_path / "refused")
    assert main(["train", *common, "-o", str(tmp_path / "cli")]) == 2
    assert "--allow_overlap" in capsys.readouterr().err and not (tmp_path / "cli").exists()
    prepared = prepare([*common, "--allow_overlap"], tmp_path / "run")
    assert "eve" not in set(prepared.tables["train"]["subject"]) and len(prepared.tables["train"]) == 16
    assert set(prepared.tables["val"]["subject"]) == {"eve"}
    dropped = pd.read_csv(tmp_path / "run" / "dropped_rows.csv")
    assert len(dropped) == 4 and set(dropped["subject"]) == {"eve"} and set(dropped["split"]) == {"train"}
    assert dropped["reason"].str.startswith("subject also in val").all()
    assert not (tmp_path / "run" / "validation.csv").exists()


def test_allow_overlap_that_leaves_no_training_row_names_them(uid_dataset: dict, tmp_path: Path) -> None:
    """Every training subject also in test: the error said "none of its 0 row(s) can be used (0 left out)"."""
    split = uid_dataset["split"]
    train = pd.read_csv(split / "train.csv")
    pd.concat([pd.read_csv(split / "test.csv"), train]).to_csv(split / "test.csv", index=False)
    common = ["-i", str(uid_dataset["prefix"]), "-d", str(split), "-l", str(uid_dataset["labels"]), "--allow_overlap"]
    with pytest.raises(DataError) as caught:
        prepare(common, tmp_path / "run")
    lines = str(caught.value).splitlines()
    assert lines[0].endswith(f"train.csv: none of its {len(train)} row(s) can be used ({len(train)} left out):")
    assert lines[1] == f"  {train['uid'][0]}: subject also in test ({split / 'test.csv'})"


def test_one_file_under_another_uid_in_train_and_test_is_an_overlap() -> None:
    """A training clip listed again in test under a new uid and subject was scored as unseen; segments of one
    file at other offsets are other clips."""
    def table(rows: list[tuple[str, str, str, float]], source: str) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=["uid", "path", "subject", "offset"]).set_index("uid")
        frame.attrs["source"] = source
        return frame

    train = table([("a", "/x/a.wav", "s1", np.nan), ("b", "/x/b.wav", "s1", 0.5), ("c", "/x/b.wav", "s1", 1.5)],
                  "train.csv")
    test = table([("a_again", "/x/a.wav", "s2", np.nan), ("b_later", "/x/b.wav", "s2", 3.0),
                  ("b_same", "/x/b.wav", "s2", 1.50)], "test.csv")
    with pytest.raises(DataError, match=re.escape("2 clip(s) of test.csv also in train.csv under another uid: "
                                                  "['/x/a.wav', '/x/b.wav']")):
        split_overlaps({"train": train, "test": test}, allow=False)
    kept, dropped = split_overlaps({"train": train, "test": test}, allow=True)
    assert kept.index.tolist() == ["b"] and dropped["reason"].tolist() == ["clip also in test (test.csv)"] * 2
    # rows without a path have no clip: they are bad input, named as such later, not one shared clip
    blank = table([("x", "", "s1", np.nan)], "train.csv"), table([("y", "", "s2", np.nan)], "test.csv")
    assert split_overlaps({"train": blank[0], "test": blank[1]}, allow=False)[0].index.tolist() == ["x"]


def test_train_and_test_sharing_a_clip_is_an_error(uid_dataset: dict, tmp_path: Path) -> None:
    split = uid_dataset["split"]
    test = pd.read_csv(split / "test.csv")
    train = pd.read_csv(split / "train.csv")
    shared = train.head(1).assign(subject="zed")  # another subject name: only the uid gives it away
    pd.concat([test, shared]).to_csv(split / "test.csv", index=False)
    common = ["-i", str(uid_dataset["prefix"]), "-d", str(split), "-l", str(uid_dataset["labels"])]
    with pytest.raises(DataError, match=rf"1 uid\(s\) of .*test.csv also in .*train.csv: \['{shared['uid'][0]}'\]"):
        prepare(common, tmp_path / "refused")


def test_seed_bucket_flag_reads_the_uid_layout_under_the_prefix_from_the_bucket(uid_dataset: dict, gcs,
                                                                               tmp_path: Path) -> None:
    fs = gcs.fs()
    for folder in uid_dataset["prefix"].iterdir():
        for file in folder.iterdir():
            fs.put_file(str(file), f"{BUCKET}/lake/study1/{folder.name}/{file.name}")
    # the seeds' -b BUCKET -i PREFIX: PREFIX is a folder in the bucket, not on the local disk
    prepared = prepare(["-b", BUCKET, "-i", "lake", "-s", "study1", "-d", str(uid_dataset["split"]),
                        "-l", str(uid_dataset["labels"])], tmp_path / "run")
    paths = list(prepared.tables["test"]["path"])
    assert paths == [f"gs://{BUCKET}/lake/study1/{uid}/waveform.wav" for uid in prepared.tables["test"].index]
    assert (prepared.tables["test"]["expected_rate"] == 8000).all()
    with pytest.raises(DataError, match="escapes the audio root"):
        resolve_uid("../lake/ann0", f"gs://{BUCKET}/lake/study1")


def test_study_is_joined_under_prefix(uid_dataset: dict, tmp_path: Path) -> None:
    prefix = uid_dataset["root"] / "root"
    prefix.mkdir()
    uid_dataset["prefix"].rename(prefix / "study1")
    path, rate = resolve_uid("ann0", str(prefix), "study1")
    assert path == str((prefix / "study1" / "ann0" / "waveform.wav").resolve()) and rate == 8000
    prepared = prepare(["-i", str(prefix), "-s", "study1", "-d", str(uid_dataset["split"]),
                        "-l", str(uid_dataset["labels"])], tmp_path / "run")
    assert all(p.startswith(str((prefix / "study1").resolve())) for p in prepared.tables["test"]["path"])
    assert (prepared.tables["test"]["expected_rate"] == 8000).all()


# ---------------------------------------------------------------- audiotune manifest

PATTERN = r"(?P<digit>\d)_(?P<subject>[a-z]+)_\d+\.wav"


def _digits(folder: Path) -> list[str]:
    names = [f"{d}_{s}_{k}.wav" for d in (3, 7) for s in ("ann", "bob") for k in (0, 1)]
    for i, name in enumerate(names):
        path = folder / ("sub" if i % 3 == 0 else "") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(200 + i, 0.1, 8000), 8000)
    return names


def test_manifest_from_a_regex(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    names = _digits(audio)
    out = tmp_path / "lists" / "manifest.csv"
    assert main(["manifest", str(audio), "--out", str(out), "--pattern", PATTERN]) == 0
    table = pd.read_csv(out, dtype=str)
    assert list(table.columns) == ["uid", "path", "digit", "subject"] and len(table) == len(names)
    for row in table.itertuples():
        assert not Path(row.path).is_absolute() and (out.parent / row.path).is_file()
        digit, subject, _ = Path(row.path).name.split("_")
        assert (row.digit, row.subject) == (digit, subject) and row.uid.endswith(Path(row.path).stem)
    assert all(Path(p).is_file() for p in read_table(out)["path"])


def test_manifest_unmatched_files_are_an_error_or_skipped(tmp_path: Path, capsys) -> None:
    audio = tmp_path / "audio"
    _digits(audio)
    sf.write(audio / "notes.wav", tone(200, 0.1, 8000), 8000)
    out = tmp_path / "manifest.csv"
    assert main(["manifest", str(audio), "--out", str(out), "--pattern", PATTERN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("audiotune manifest: error: 1 file(s) under") and "notes.wav" in err
    assert err.rstrip().endswith("(use --on_error skip to leave them out; they are then listed in "
                                 "manifest.skipped.csv)")
    assert not out.exists()
    assert main(["manifest", str(audio), "--out", str(out), "--pattern", PATTERN, "--on_error", "skip"]) == 0
    skipped = pd.read_csv(out.with_suffix(".skipped.csv"))
    assert skipped["path"].tolist() == [str(audio / "notes.wav")] and "does not match" in skipped["reason"][0]
    assert len(pd.read_csv(out)) == 8
    (audio / "notes.wav").unlink()  # the list of the earlier manifest would name a file this one does not lack
    assert main(["manifest", str(audio), "--out", str(out), "--pattern", PATTERN, "--on_error", "skip"]) == 0
    assert len(pd.read_csv(out)) == 8 and not out.with_suffix(".skipped.csv").exists()


def test_a_pattern_that_labels_no_file_is_one_error_with_an_example(tmp_path: Path, capsys) -> None:
    audio = tmp_path / "audio"
    _digits(audio)
    assert main(["manifest", str(audio), "--out", str(tmp_path / "m.csv"), "--pattern", r"(?P<word>[a-z]+)\.wav",
                 "--on_error", "skip"]) == 2  # skipping every file would write an empty manifest
    err = capsys.readouterr().err
    assert f"error: {audio}: none of its 8 audio file(s) can be labelled, e.g. " in err and "does not match" in err
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("column", ["path", "uid"])
def test_a_pattern_group_named_as_a_manifest_column_is_refused(tmp_path: Path, capsys, column: str) -> None:
    _digits(tmp_path / "audio")
    out = tmp_path / "m.csv"
    assert main(["manifest", str(tmp_path / "audio"), "--out", str(out),
                 "--pattern", rf"(?P<{column}>\d)_(?P<subject>[a-z]+)_\d+\.wav"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--pattern" in err and f"(?P<{column}>" in err and not out.exists()
    assert main(["manifest", str(tmp_path / "audio"), "--out", str(out), "--folder_label", column]) == 2
    assert f"--folder_label {column}: would replace" in capsys.readouterr().err and not out.exists()
    # a pattern's group and the folder's name filling one column: one of them would be lost
    assert main(["manifest", str(tmp_path / "audio"), "--out", str(out), "--folder_label", "digit",
                 "--pattern", r"(?P<digit>\d)_(?P<subject>[a-z]+)_\d+\.wav"]) == 2
    assert "--folder_label digit and --pattern" in capsys.readouterr().err and not out.exists()


def test_manifest_folder_per_class(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    for label in ("cat", "dog"):
        for k in range(2):
            (audio / label).mkdir(parents=True, exist_ok=True)
            sf.write(audio / label / f"{k}.flac", tone(300, 0.1, 8000), 8000)
    out = tmp_path / "m.csv"
    assert main(["manifest", str(audio), "--out", str(out), "--folder_label", "label"]) == 0
    table = pd.read_csv(out)
    assert table["uid"].tolist() == ["cat/0", "cat/1", "dog/0", "dog/1"]
    assert table["label"].tolist() == ["cat", "cat", "dog", "dog"]


def test_files_of_one_name_in_two_formats_get_distinct_uids(tmp_path: Path, caplog) -> None:
    """a.wav and a.flac both had uid 'a': the manifest was refused by every command that read it, and a folder
    given to -d became a table of two rows of one uid (embeddings that cannot be joined back)."""
    from audiotune.data.layout import read_splits

    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("a.wav", "a.flac", "b.wav"):
        sf.write(audio / name, tone(300, 0.1, 8000), 8000)
    out = tmp_path / "m.csv"
    assert main(["manifest", str(audio), "--out", str(out)]) == 0
    assert pd.read_csv(out)["uid"].tolist() == ["a.flac", "a.wav", "b"]
    assert read_table(out).index.tolist() == ["a.flac", "a.wav", "b"]
    assert "2 audio file(s) share their name with a file of another format" in caplog.text
    assert read_splits(audio)["data"].index.tolist() == ["a.flac", "a.wav", "b"]


def test_manifest_regex_without_named_groups_is_an_error(tmp_path: Path, capsys) -> None:
    _digits(tmp_path / "audio")
    assert main(["manifest", str(tmp_path / "audio"), "--out", str(tmp_path / "m.csv"),
                 "--pattern", r"\d_[a-z]+_\d+\.wav"]) == 2
    assert "named group" in capsys.readouterr().err
    assert main(["manifest", str(tmp_path / "audio"), "--out", str(tmp_path / "m.csv"), "--pattern", "(?P<x"]) == 2
    assert "--pattern" in capsys.readouterr().err


# ---------------------------------------------------------------- audiotune split

def _subject_manifest(path: Path, subjects: int = 10) -> Path:
    rows = [{"uid": f"s{i}_{k}", "path": f"s{i}_{k}.wav", "subject": f"s{i}", "label": "ab"[i % 2]}
            for i in range(subjects) for k in range(3)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _split(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(out / f"{name}.csv") for name in ("train", "val", "test")
            if (out / f"{name}.csv").is_file()}


def test_split_is_subject_disjoint_stratified_and_seeded(tmp_path: Path) -> None:
    manifest = _subject_manifest(tmp_path / "m.csv")
    args = ["split", str(manifest), "--stratify", "label", "--val_fraction", "0.2"]
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert main([*args, "--out", str(tmp_path / name), "--seed", seed]) == 0
    parts = _split(tmp_path / "a")
    subjects = {name: set(part["subject"]) for name, part in parts.items()}
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"]
                or subjects["val"] & subjects["test"])
    assert set().union(*subjects.values()) == {f"s{i}" for i in range(10)}
    assert sum(len(p) for p in parts.values()) == 30
    for part in parts.values():
        assert set(part["label"]) == {"a", "b"}
    for name in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()
    assert any((tmp_path / "a" / f"{n}.csv").read_bytes() != (tmp_path / "c" / f"{n}.csv").read_bytes()
               for n in ("train", "val", "test"))


def test_group_uid_makes_every_row_its_own_group(tmp_path: Path, capsys) -> None:
    """Events such as key presses have no subject: --group uid splits (and folds) them row by row."""
    manifest = _subject_manifest(tmp_path / "m.csv")
    table = pd.read_csv(manifest).drop(columns="subject")
    table.to_csv(manifest, index=False)
    assert main(["split", str(manifest), "--out", str(tmp_path / "s"), "--group", "uid", "--stratify", "label"]) == 0
    parts = _split(tmp_path / "s")
    printed = capsys.readouterr().out.splitlines()  # each split's share of the rows, as whole groups made it
    assert printed == [f"{(tmp_path / 's' / name).resolve()}.csv: {len(part)} rows ({len(part) / 30:.0%}), "
                       f"{len(part)} uid group{'' if len(part) == 1 else 's'}" for name, part in parts.items()]
    assert sum(len(p) for p in parts.values()) == 30 and set(parts["test"]["label"]) == {"a", "b"}
    assert not set(parts["train"]["uid"]) & set(parts["test"]["uid"])
    assert main(["split", str(manifest), "--out", str(tmp_path / "k"), "--group", "uid", "--folds", "3"]) == 0
    tests = [set(pd.read_csv(tmp_path / "k" / f"fold_{k}" / "test.csv")["uid"]) for k in (1, 2, 3)]
    assert sum(len(t) for t in tests) == 30 and len(set().union(*tests)) == 30
    assert main(["split", str(manifest), "--out", str(tmp_path / "x"), "--group", "speaker"]) == 2


def test_split_with_explicit_subjects(tmp_path: Path) -> None:
    manifest = _subject_manifest(tmp_path / "m.csv")
    assert main(["split", str(manifest), "--out", str(tmp_path / "o"), "--test_subjects", "s1", "s2",
                 "--val_subjects", "s3"]) == 0
    parts = _split(tmp_path / "o")
    assert set(parts["test"]["subject"]) == {"s1", "s2"} and set(parts["val"]["subject"]) == {"s3"}
    assert set(parts["train"]["subject"]) == {f"s{i}" for i in range(10)} - {"s1", "s2", "s3"}


def test_named_subjects_are_never_drawn_into_the_other_part(tmp_path: Path, capsys) -> None:
    """--val_subjects with a test part drawn by fraction: the draw leaves the named subjects alone (it could take
    them, leaving val.csv empty); a subject named for both parts is an error."""
    manifest = _subject_manifest(tmp_path / "m.csv")
    for seed in range(6):  # a 0.5 test draw takes half the subjects: without the rule some seed takes s3
        out = tmp_path / f"o{seed}"
        assert main(["split", str(manifest), "--out", str(out), "--test_fraction", "0.5", "--val_subjects", "s3",
                     "--seed", str(seed)]) == 0
        parts = _split(out)
        assert set(parts["val"]["subject"]) == {"s3"} and "s3" not in set(parts["test"]["subject"])
    assert main(["split", str(manifest), "--out", str(tmp_path / "x"), "--test_subjects", "s3", "--val_subjects",
                 "s3"]) == 2
    assert "['s3']: named by both --test_subjects and --val_subjects" in capsys.readouterr().err


def test_split_unknown_subject_is_an_error(tmp_path: Path, capsys) -> None:
    manifest = _subject_manifest(tmp_path / "m.csv")
    assert main(["split", str(manifest), "--out", str(tmp_path / "o"), "--test_subjects", "zed"]) == 2
    assert "zed" in capsys.readouterr().err


def test_split_folds(tmp_path: Path) -> None:
    manifest = _subject_manifest(tmp_path / "m.csv", subjects=12)
    assert main(["split", str(manifest), "--out", str(tmp_path / "o"), "--folds", "3", "--stratify", "label"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["fold_1", "fold_2", "fold_3"]
    tested: list[str] = []
    for k in (1, 2, 3):
        parts = _split(tmp_path / "o" / f"fold_{k}")
        subjects = {name: set(part["subject"]) for name, part in parts.items()}
        assert set(subjects) == {"train", "val", "test"}
        assert not (subjects["train"] & subjects["test"] or subjects["val"] & subjects["test"]
                    or subjects["train"] & subjects["val"])
        assert set().union(*subjects.values()) == {f"s{i}" for i in range(12)}
        tested += sorted(subjects["test"])
    assert sorted(tested) == sorted(f"s{i}" for i in range(12))  # each subject in exactly one test fold


# ---------------------------------------------------------------- audiotune stats

def test_stats_match_features_computed_directly(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "stats.json"
    assert main(["stats", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "--features", "fbank",
                 "--num_mel_bins", "24", "--split", "test", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    result = json.loads(printed.out)
    assert result == json.loads(out.read_text())
    assert re.search(r"^stats test: done \(4 clips in ", printed.err, re.M)  # its progress, as every pass's
    uids = pd.read_csv(uid_dataset["split"] / "test.csv")["uid"]
    feats = [kaldi_fbank(torch.from_numpy(load_clip(str(uid_dataset["prefix"] / uid / "waveform.wav"),
                                                    AudioSpec())[0]), 16000, num_mel_bins=24) for uid in uids]
    every = torch.cat(feats).double()
    assert result["split"] == "test" and result["clips"] == 4 and result["frames"] == every.shape[0]
    assert result["dataset_mean"] == pytest.approx(float(every.mean()), rel=1e-6)
    assert result["dataset_std"] == pytest.approx(float(every.std(unbiased=False)), rel=1e-6)


def test_stats_refuses_a_split_the_table_does_not_have(uid_dataset: dict, capsys) -> None:
    ds, small = uid_dataset, ["--features", "fbank", "--num_mel_bins", "24"]
    assert main(["stats", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "--split", "bogus", *small]) == 2
    err = capsys.readouterr().err
    assert f"--split bogus: {ds['split']} has no split bogus (its splits: train, val, test)" in err
    one = ds["split"] / "test.csv"
    assert main(["stats", "-i", str(ds["prefix"]), "-d", str(one), "--split", "test", *small]) == 2
    assert f"--split test: {one} is one table, whose rows are named data" in capsys.readouterr().err
    assert main(["stats", "-i", str(ds["prefix"]), "-d", str(one), *small]) == 0  # its rows by default
    assert json.loads(capsys.readouterr().out)["split"] == "data"


def test_stats_reads_only_the_split_it_measures(uid_dataset: dict, capsys) -> None:
    ds = uid_dataset
    for name in ("train", "test"):
        table = pd.read_csv(ds["split"] / f"{name}.csv")
        table.loc[len(table)] = {**table.iloc[0].to_dict(), "uid": f"ghost_{name}"}
        table.to_csv(ds["split"] / f"{name}.csv", index=False)
    assert main(["stats", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "--features", "fbank",
                 "--num_mel_bins", "24", "--split", "val"]) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val" and result["clips"] == 4 and result["skipped"] == 0


def test_zero_dataset_std_is_a_clear_error(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    ds = uid_dataset
    with pytest.raises(SystemExit) as refused:  # refused by the parser, before anything runs
        main(train_args(["-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"])], tmp_path,
                        "--dataset_std", "0"))
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("audiotune train: error:") and "dataset_std" in err and "audiotune stats" in err
    assert not (tmp_path / "config.yaml").exists()
