"""JSON split files of the speech-emotion recipe as -d for train / evaluate, and as cv folds, labels included."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import SMALL_ECAPA, tone

from audiotune.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Sessions of low / high tones in one audio folder and two JSON folds (hard labels, votes)."""
    root = tmp_path_factory.mktemp("emotion")
    audio = root / "wavs"
    sessions = ("Ses01", "Ses02", "Ses03")
    names = {}
    for session in sessions:
        (audio / session).mkdir(parents=True)
        for k in range(8):
            high = k % 2
            name = f"{session}/utt{k}.wav"
            sf.write(audio / name, tone(300 + 500 * high, 0.5, 16000, seed=k), 16000)
            names[name] = ["neutral", "happy"][high]
    folds = root / "folds"
    folds.mkdir()
    for number, held_out in enumerate(sessions, start=1):  # leave one session out, no Val (as the seed's files)
        train = {n: v for n, v in names.items() if not n.startswith(held_out)}
        test = {n: v for n, v in names.items() if n.startswith(held_out)}
        (folds / f"fold{number}.json").write_text(json.dumps({"Train": train, "Val": {}, "Test": test}))
    ses1 = {n: v for n, v in names.items() if n.startswith("Ses01")}
    ses2 = {n: v for n, v in names.items() if n.startswith("Ses02")}
    votes = {n: {"neutral": 3 - 2 * (v == "happy"), "happy": 1 + 2 * (v == "happy")} for n, v in names.items()}
    soft = root / "soft.json"
    soft.write_text(json.dumps({"Train": {n: votes[n] for n in ses1}, "Test": {n: votes[n] for n in ses2}}))
    return {"audio": audio, "folds": folds, "soft": soft}


def train_args(source: Path, audio: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "-d", str(source), "-i", str(audio), "-o", str(out), *SMALL_ECAPA, "-e", "1", "-bs", "4",
            "--val_size", "1", *extra]


@pytest.mark.slow
def test_a_json_split_file_trains_with_its_own_labels(corpus: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus["folds"] / "fold1.json", corpus["audio"], run)) == 0  # no --label_txt
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert [(h["name"], h["kind"], h["classes"]) for h in config["heads"]] == \
        [("label", "categorical", ["happy", "neutral"])]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 8 and metrics["val"]["n"] == 1  # Ses01, the Test part; 1 drawn utterance
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert set(predictions["uid"]) >= {f"Ses01/utt{k}.wav" for k in range(8)}
    assert main(["evaluate", "--run", str(run), "-d", str(corpus["folds"] / "fold2.json"), "-o",
                 str(tmp_path / "scored")]) == 0
    scored = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert scored["train"]["n"] == 16 and scored["test"]["n"] == 8


@pytest.mark.slow
def test_vote_distributions_make_a_soft_head(corpus: dict, tmp_path: Path) -> None:
    run = tmp_path / "soft"
    assert main(train_args(corpus["soft"], corpus["audio"], run, "--labeling_method", "sample")) == 0
    head = yaml.safe_load((run / "config.yaml").read_text())["heads"][0]
    assert head["kind"] == "soft" and head["columns"] == ["label=happy", "label=neutral"]


def test_a_missing_json_file_or_train_part_is_named(corpus: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(train_args(tmp_path / "nope.json", corpus["audio"], tmp_path / "a")) == 2
    assert "nope.json: JSON split file not found" in capsys.readouterr().err
    only_test = tmp_path / "test_only.json"
    only_test.write_text(json.dumps({"Train": {}, "Test": {"Ses01/utt0.wav": "happy"}}))
    assert main(train_args(only_test, corpus["audio"], tmp_path / "b")) == 2
    assert "training needs a train split" in capsys.readouterr().err and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_cv_over_json_files_takes_their_labels(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    args = ["cv", "-d", str(corpus["folds"]), "--audio_dir", str(corpus["audio"]), "-o", str(out), *SMALL_ECAPA,
            "-e", "1", "-bs", "4"]
    assert main(args) == 0
    assert (out / "labels.txt").read_text() == "label\n"
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["folds"] == 3 and summary["statistics"]["test"]["accuracy"]["mean"] is not None


def test_the_early_ssast_split_format_is_named_with_what_to_write_instead(tmp_path: Path) -> None:
    from audiotune.data.errors import DataError
    from audiotune.data.json_splits import read_json_split

    path = tmp_path / "train_ssast.json"
    path.write_text(json.dumps({"data": [{"wav": "u01", "labels": [0, 1, 1]}]}))
    with pytest.raises(DataError, match=r"the early SSAST split format .* write it as a split CSV \(uid, then one "
                                        r"column per label, named as its label_df.csv's display_name"):
        read_json_split(path)


def test_null_empty_and_na_values_labels_are_missing_as_in_a_csv_split(tmp_path: Path) -> None:
    """A JSON split's label ``NA`` is read as missing with --na_values NA (as a CSV split's cell), ``null`` and an
    empty name always; record entries too. Those rows then have no label (listed when left out), not a class NA."""
    from audiotune.data.layout import read_splits

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"Train": {"a.wav": "ang", "b.wav": "NA", "c.wav": None, "d.wav": "",
                                           "e.wav": {"wav": "e.wav", "label": "NA", "speaker": "NA"}},
                                 "Test": {"f.wav": "sad"}}))
    train = read_splits(split, na_values=["NA"])["train"]
    assert train["label"].isna().tolist() == [False, True, True, True, True] and pd.isna(train.loc["e.wav", "speaker"])
    assert read_splits(split)["train"]["label"].fillna("-").tolist() == ["ang", "NA", "-", "-", "NA"]


def test_a_plain_label_in_a_file_of_votes_is_all_the_votes_for_its_class(tmp_path: Path) -> None:
    """A file mixing vote distributions and plain labels: a plain label is a one-hot vote share (its row was
    left out of the soft head as 'no target'), in every split, a class only plain labels name included."""
    import numpy as np

    from audiotune.data.json_splits import json_label_groups
    from audiotune.data.labels import encode_targets, infer_heads
    from audiotune.data.layout import read_splits

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"Train": {"a.wav": {"ang": 2, "sad": 1}, "b.wav": "ang", "c.wav": "hap",
                                           "d.wav": {"sad": 3}},
                                 "Test": {"e.wav": "sad", "f.wav": None}}))
    tables = read_splits(split)
    groups = json_label_groups(tables, str(split))
    assert groups[0].columns == ["label=ang", "label=hap", "label=sad"] and groups[0].kind == "soft"
    heads = infer_heads(groups, tables["train"])
    train = encode_targets(tables["train"], heads)
    np.testing.assert_allclose(train, [[2 / 3, 0, 1 / 3], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    test = encode_targets(tables["test"], heads)
    np.testing.assert_allclose(test[0], [0, 0, 1])
    assert np.isnan(test[1]).all()


def test_votes_beside_unlabelled_records_and_numeric_plain_labels(tmp_path: Path) -> None:
    """A split of records without labels beside one of votes is read (it raised KeyError 'label'); a plain label
    1 in a split that also holds null is the vote class "1", not a class "1.0" (the column read as floats)."""
    from audiotune.data.layout import read_splits

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"Train": {"a.wav": {"1": 2, "0": 1}, "b.wav": 1, "c.wav": None},
                                 "Test": {"d.wav": {"wav": "d.wav", "speaker": "F1"}}}))
    tables = read_splits(split)
    assert sorted(c for c in tables["train"].columns if c.startswith("label=")) == ["label=0", "label=1"]
    assert tables["train"].loc["b.wav", "label=1"] == 1 and pd.isna(tables["train"].loc["b.wav", "label=0"])
    assert "label" not in tables["test"].columns
