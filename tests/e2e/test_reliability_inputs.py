"""Probes through the CLI: bad tables, labels, weights and clips end in one line naming the problem (exit 2)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import SMALL_ECAPA, make_uid_dataset, small_train_args, tone
from safetensors.torch import load_file, save_file

from audiotune.cli import main

train_args = small_train_args
SMALL_FEATURES = ["--model", "ecapa_tdnn", "--features", "fbank", "--num_mel_bins", "24"]


@pytest.fixture(scope="module")
def trained(trained_run: dict) -> dict:
    return trained_run


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def path_table(ds: dict, out: Path, split: str = "test") -> pd.DataFrame:
    """A split's rows with a path column instead of uid folders."""
    table = pd.read_csv(ds["split"] / f"{split}.csv")
    table["path"] = [str(ds["prefix"] / uid / "waveform.wav") for uid in table["uid"]]
    table.to_csv(out, index=False)
    return table


@pytest.mark.parametrize("samples", [1, 2, 300])
@pytest.mark.slow
def test_clips_too_short_for_the_model_are_bad_audio(tmp_path: Path, capsys, samples: int) -> None:
    ds = make_uid_dataset(tmp_path)
    # 300 samples at 8 kHz: 600 at 16 kHz, one fbank frame (400) but fewer than the 3 frames (720) ECAPA pads for
    sf.write(ds["prefix"] / "ann1" / "waveform.wav", np.full(samples, 0.1), 8000)
    assert main(train_args(ds, tmp_path / "run")) == 2
    err = error_of(capsys)
    assert "ann1/waveform.wav" in err and "the model needs for one output frame" in err
    assert main(train_args(ds, tmp_path / "run", "--on_error", "skip")) == 0
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert skipped["uid"].tolist() == ["ann1"] and "shorter than the" in skipped["reason"][0]


@pytest.mark.slow
def test_the_minimum_follows_the_model(tmp_path: Path) -> None:
    from audiotune.cli import build_parser, config_from_args
    from audiotune.models.backbones import input_spec, resolve_config

    def minimum(*flags: str) -> int:
        return input_spec(resolve_config(config_from_args(build_parser().parse_args(["train", *flags])))).min_samples

    # 25 ms fbank frames every 10 ms at 16 kHz; ECAPA's widest reflect padding (dilation 4, kernel 3) is 4 frames
    assert minimum("--model", "ecapa_tdnn") == 400 + 4 * 160
    assert minimum("--model", "ecapa_tdnn", "--channels", "64", "64", "192", "--kernel_sizes", "3", "3", "1",
                   "--dilations", "1", "1", "1") == 400 + 160
    assert minimum("--model", "ecapa_tdnn", "--features", "mfcc", "--n_fft", "512") == 4 * 256
    assert minimum("--model", "ssast", "--model_size", "tiny") == 400


def test_label_column_missing_from_test_csv_only(tmp_path: Path, capsys) -> None:
    ds = make_uid_dataset(tmp_path)
    test = pd.read_csv(ds["split"] / "test.csv")
    test.drop(columns=["pitch"]).to_csv(ds["split"] / "test.csv", index=False)
    assert main(train_args(ds, tmp_path / "run")) == 2
    assert "test.csv: label column(s) ['pitch'] of the run not found" in error_of(capsys)


@pytest.mark.slow
def test_empty_path_cell_is_a_named_bad_row(trained: dict, tmp_path: Path, capsys) -> None:
    table = path_table(trained, tmp_path / "t.csv")
    table.loc[1, "path"] = ""
    table.to_csv(tmp_path / "t.csv", index=False)
    assert main(["evaluate", "--run", str(trained["run"]), "-d", str(tmp_path / "t.csv"), "-o",
                 str(tmp_path / "e")]) == 2
    assert f"row '{table['uid'][1]}' has an empty path cell" in error_of(capsys)
    assert main(["evaluate", "--run", str(trained["run"]), "-d", str(tmp_path / "t.csv"), "-o", str(tmp_path / "e"),
                 "--on_error", "skip"]) == 0
    assert pd.read_csv(tmp_path / "e" / "skipped.csv")["uid"].tolist() == [table["uid"][1]]


def test_split_of_a_header_only_manifest(tmp_path: Path, capsys) -> None:
    (tmp_path / "m.csv").write_text("path,label,subject\n")
    assert main(["split", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s")]) == 2
    assert "m.csv: no rows (only a header" in error_of(capsys) and not (tmp_path / "s").exists()


def test_contradictory_split_fractions(tmp_path: Path, capsys) -> None:
    ds = make_uid_dataset(tmp_path)
    manifest = path_table(ds, tmp_path / "m.csv", "train")
    assert len(manifest) == 16
    assert main(["split", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s"), "--test_fraction", "0.6",
                 "--val_fraction", "0.5"]) == 2
    assert "leave nothing for training" in error_of(capsys)


def test_config_yaml_that_does_not_parse(trained: dict, tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.yaml").write_text("train: [\n")
    assert main([*train_args(trained, tmp_path / "run"), "--config", str(tmp_path / "bad.yaml")]) == 2
    assert f"{tmp_path / 'bad.yaml'}: not valid YAML at line 2" in error_of(capsys)


def test_a_runs_config_yaml_that_does_not_parse_is_named_by_every_scoring_command(trained: dict, tmp_path: Path,
                                                                                  capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    (run / "config.yaml").write_text("model: [unclosed\n")
    test = str(trained["split"] / "test.csv")
    for argv in (["evaluate", "--run", str(run), "-d", test], ["extract", "--run", str(run), "-d", test]):
        assert main(argv) == 2
        assert error_of(capsys).startswith(f"audiotune {argv[0]}: error: {run / 'config.yaml'}: not valid YAML at "
                                           "line 2")


def test_truncated_or_reshaped_weights(trained: dict, tmp_path: Path, capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    weights = run / "model.safetensors"
    state = {name: tensor.clone() for name, tensor in load_file(str(weights)).items()}  # not a view of the file
    weights.write_bytes(weights.read_bytes()[:1000])
    test = str(trained["split"] / "test.csv")
    assert main(["evaluate", "--run", str(run), "-d", test]) == 2
    assert "cannot be read as safetensors" in error_of(capsys)
    name = next(k for k, v in state.items() if v.ndim == 2)
    state[name] = state[name][:1]
    save_file(state, str(weights))
    assert main(["evaluate", "--run", str(run), "-d", test]) == 2
    assert f"tensor(s) of other shapes, e.g. {name}" in error_of(capsys)


def test_layer_out_of_range_for_extract(trained: dict, tmp_path: Path, capsys) -> None:
    assert main(["extract", "--run", str(trained["run"]), "-d", str(trained["split"] / "test.csv"), "--embedding_type",
                 "pt", "--layer", "7", "--out", str(tmp_path / "e.parquet")]) == 2
    assert "--layer 7: the run's backbone has hidden states 0..0" in error_of(capsys)
    assert not (tmp_path / "e.parquet").exists()


def test_extract_skip_list_sits_beside_its_output_not_in_the_run(trained: dict, tmp_path: Path) -> None:
    table = path_table(trained, tmp_path / "t.csv")
    sf.write(tmp_path / "broken.wav", np.zeros(0), 8000)
    table.loc[0, "path"] = str(tmp_path / "broken.wav")
    table.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "emb.parquet"
    assert main(["extract", "--run", str(trained["run"]), "-d", str(tmp_path / "t.csv"), "--out", str(out),
                 "--on_error", "skip"]) == 0
    assert pd.read_csv(tmp_path / "emb.skipped.csv")["uid"].tolist() == [table["uid"][0]]
    assert not (trained["run"] / "skipped.csv").exists()


def test_divergence_to_nan_is_one_line(trained: dict, tmp_path: Path, capsys) -> None:
    assert main(train_args(trained, tmp_path / "run", "-lr", "1e12", "--scheduler", "none", "-e", "3")) == 2
    *progress, error = error_of(capsys).splitlines()  # progress lines of the epoch, then the error
    assert "train loss is nan" in error and all(line.startswith("train epoch 1/3: ") for line in progress)


def test_version_and_a_help_that_says_what_the_tool_does(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    from audiotune import __version__
    assert capsys.readouterr().out.strip() == f"audiotune {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "turns labelled audio into classifiers and embeddings" in text and "start here:" in text


# ---------------------------------------------------------------- words that point at the right thing


def test_header_only_train_csv_is_named_as_such(tmp_path: Path, capsys) -> None:
    ds = make_uid_dataset(tmp_path)
    pd.read_csv(ds["split"] / "train.csv").iloc[:0].to_csv(ds["split"] / "train.csv", index=False)
    assert main(train_args(ds, tmp_path / "run")) == 2
    err = error_of(capsys)
    assert "train.csv: no rows (only a header" in err and "val.csv" not in err
    assert not (tmp_path / "run").exists()


def test_a_split_with_every_row_skipped_says_why_without_pointing_at_unwritten_files(tmp_path: Path,
                                                                                   capsys) -> None:
    ds = make_uid_dataset(tmp_path)
    for k in range(4):
        sf.write(ds["prefix"] / f"eve{k}" / "waveform.wav", np.zeros(4000), 8000)
    assert main(train_args(ds, tmp_path / "run", "--on_error", "skip")) == 2
    err = error_of(capsys)
    assert "val.csv: none of its 4 row(s) can be used (4 left out)" in err
    assert "eve0/waveform.wav: audio is all zeros" in err and "skipped.csv" not in err
    assert not (tmp_path / "run").exists()


def test_stats_lists_what_it_skipped(trained: dict, tmp_path: Path, capsys) -> None:
    table = path_table(trained, tmp_path / "t.csv", "train")
    sf.write(tmp_path / "silent.wav", np.zeros(4000), 8000)
    table.loc[len(table)] = {**table.iloc[0].to_dict(), "uid": "silent", "path": str(tmp_path / "silent.wav")}
    table.to_csv(tmp_path / "t.csv", index=False)
    args = ["stats", "-d", str(tmp_path / "t.csv"), *SMALL_FEATURES, "--on_error", "skip"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert '"skipped": 1' in captured.out and "silent.wav: audio is all zeros" in captured.err
    assert main([*args, "--out", str(tmp_path / "stats.json")]) == 0
    assert pd.read_csv(tmp_path / "stats.skipped.csv")["uid"].tolist() == ["silent"]
    captured = capsys.readouterr()
    assert "listed in" in captured.err and json.loads(captured.out)["skipped"] == 1  # stdout: the JSON alone


@pytest.mark.slow
def test_manifest_ids_that_look_like_numbers_survive_split_and_train(tmp_path: Path, capsys) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for subject in ("01", "02", "03", "1"):
        for pitch, freq in (("lo", 300), ("hi", 800)):
            for take in range(2):
                sf.write(audio / f"{subject}_{pitch}_{take}.wav", tone(freq, 0.5, 8000, seed=take), 8000)
    sf.write(audio / "7.wav", tone(300, 0.5, 8000), 8000)
    sf.write(audio / "007.wav", tone(800, 0.5, 8000), 8000)
    manifest = tmp_path / "m.csv"
    assert main(["manifest", str(audio), "--out", str(manifest), "--pattern",
                 r"(?P<subject>\d+)_(?P<pitch>[a-z]+)_\d\.wav", "--on_error", "skip"]) == 0
    # subjects '01' and '1' stay two subjects; the uids '7' and '007' of the skip list stay two files
    assert main(["split", str(manifest), "--out", str(tmp_path / "s"), "--test_subjects", "01",
                 "--val_subjects", "1"]) == 0
    assert pd.read_csv(tmp_path / "s" / "val.csv", dtype=str)["subject"].unique().tolist() == ["1"]
    (tmp_path / "labels.txt").write_text("pitch\n")
    assert main(["train", "-d", str(tmp_path / "s"), "-l", str(tmp_path / "labels.txt"), "-o",
                 str(tmp_path / "run"), *SMALL_ECAPA, "-e", "1", "-bs", "4"]) == 0
    numbered = tmp_path / "n.csv"
    assert main(["manifest", str(audio), "--out", str(numbered), "--pattern", r"(?P<name>\d+)\.wav",
                 "--on_error", "skip"]) == 0
    assert main(["stats", "-d", str(numbered), *SMALL_FEATURES]) == 0
    assert '"clips": 2' in capsys.readouterr().out


def test_empty_path_cell_in_a_table_without_uids_names_its_line(trained: dict, tmp_path: Path, capsys) -> None:
    table = path_table(trained, tmp_path / "t.csv")
    table = table.drop(columns=["uid"])
    table.loc[2, "path"] = ""
    table.to_csv(tmp_path / "t.csv", index=False)
    assert main(["evaluate", "--run", str(trained["run"]), "-d", str(tmp_path / "t.csv"), "-o",
                 str(tmp_path / "e")]) == 2
    assert "t.csv: empty 'path' cell on line(s) [4]" in error_of(capsys)


def test_a_fraction_too_fine_for_the_groups_takes_one_group_or_names_the_flag(tmp_path: Path, capsys) -> None:
    ds = make_uid_dataset(tmp_path)
    path_table(ds, tmp_path / "m.csv", "train")
    assert main(["split", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s"), "--test_fraction", "0.5",
                 "--val_fraction", "0.1"]) == 0
    assert pd.read_csv(tmp_path / "s" / "val.csv")["subject"].nunique() == 1
    assert main(["split", str(tmp_path / "m.csv"), "--out", str(tmp_path / "t"), "--test_subjects", "ann", "bob",
                 "cat", "--val_fraction", "0.1"]) == 2
    err = error_of(capsys)
    assert "--val_fraction 0.1 (after the test part) needs a 'subject' for this part and one for training" in err
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_label_cells_are_text_unless_na_values_says_otherwise(tmp_path: Path, caplog) -> None:
    ds = make_uid_dataset(tmp_path)
    for split in ("train", "val", "test"):  # a third class spelled NA, as a user might name "no answer"
        table = pd.read_csv(ds["split"] / f"{split}.csv")
        table.loc[table.index % 4 == 3, "pitch"] = "NA"
        table.to_csv(ds["split"] / f"{split}.csv", index=False)
    ds["labels"].write_text("pitch\n")
    assert main(train_args(ds, tmp_path / "run")) == 0
    assert "pitch inferred categorical" in caplog.text
    heads = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["heads"]
    assert heads[0]["classes"] == ["NA", "high", "low"]
    assert main(train_args(ds, tmp_path / "run2", "--na_values", "NA")) == 0
    heads = yaml.safe_load((tmp_path / "run2" / "config.yaml").read_text())["heads"]
    assert heads[0]["classes"] == ["high", "low"]
    dropped = pd.read_csv(tmp_path / "run2" / "dropped_rows.csv")
    assert sorted(dropped["uid"]) == ["ann3", "bob3", "cat3", "dan3", "eve3", "fay3"]  # said, not silent


def test_two_columns_of_one_name_are_an_error(tmp_path: Path, capsys) -> None:
    ds = make_uid_dataset(tmp_path)
    train = ds["split"] / "train.csv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[0] + ",pitch"] + [line + ",x" for line in lines[1:]]) + "\n")
    assert main(train_args(ds, tmp_path / "run")) == 2
    assert "train.csv: column name(s) ['pitch'] appear more than once" in error_of(capsys)
    assert not (tmp_path / "run").exists()


class _Payload:
    """What a crafted checkpoint holds: unpickling it would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_a_checkpoint_with_code_is_refused_in_one_line_naming_it(trained: dict, tmp_path: Path, capsys) -> None:
    import torch

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "x": _Payload(marker)}, evil)
    assert main(train_args(trained, tmp_path / "run", "-c", str(evil))) == 2
    err = error_of(capsys).strip()
    assert len(err.splitlines()) == 1 and "evil.pt: holds Python objects besides tensors" in err
    assert "weights_only=False" not in err and "safetensors" in err
    run = tmp_path / "resumed"
    assert main(train_args(trained, run, "-e", "1")) == 0
    torch.save({"state_dict": {}, "x": _Payload(marker)}, run / "checkpoints" / "last.ckpt")
    assert main(train_args(trained, run, "-e", "2", "--resume")) == 2
    assert "last.ckpt: holds Python objects besides tensors" in error_of(capsys)
    assert not marker.exists()


def test_a_recipe_that_is_missing_or_not_text_is_named(trained: dict, tmp_path: Path, capsys) -> None:
    assert main(train_args(trained, tmp_path / "run", "--config", str(tmp_path / "missing.yaml"))) == 2
    assert "missing.yaml: config file not found" in error_of(capsys)
    clip = tmp_path / "x.wav"
    sf.write(clip, tone(300, 0.5, 8000), 8000)
    assert main(train_args(trained, tmp_path / "run", "--config", str(clip))) == 2
    assert "x.wav: not a YAML config file (not UTF-8 text)" in error_of(capsys)
