"""evaluate and extract as the seeds' command lines called them: the model file for the run, the audio prefix
and study of uid-layout data, and ``--cloud`` uploads of their outputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from conftest import BUCKET, Emulator, tone

from audiotune.cli import main
from audiotune.outputs import (
    EVALUATE_DIR,
    METRICS_FILE,
    MODEL_FILE,
    PREDICTIONS_FILE,
    SKIPPED_FILE,
    embeddings_file,
)


def _metrics(folder: Path) -> dict:
    return json.loads((folder / METRICS_FILE).read_text())


@pytest.mark.parametrize("spelling", ["--trained_mdl_path", "-mp", "--finetuned-mdl-path"])
@pytest.mark.slow
def test_a_model_file_names_its_run_and_outputs_default_into_it(trained_run: dict, spelling: str) -> None:
    run, test = trained_run["run"], str(trained_run["split"] / "test.csv")
    shutil.rmtree(run / EVALUATE_DIR, ignore_errors=True)
    (run / embeddings_file("pt")).unlink(missing_ok=True)
    assert main(["evaluate", spelling, str(run / MODEL_FILE), "-d", test]) == 0
    assert _metrics(run / EVALUATE_DIR)["data"]["n"] == 4
    assert main(["extract", spelling, str(run / MODEL_FILE), "-d", test, "--embedding_type", "pt"]) == 0
    assert len(pd.read_parquet(run / embeddings_file("pt"))) == 4
    assert not (run / MODEL_FILE / EVALUATE_DIR).exists()


@pytest.mark.slow
def test_prefix_and_study_find_uid_audio_elsewhere(trained_run: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """The test split's audio copied under another prefix and study; one clip there replaced by a louder,
    higher tone, so only audio read from the new place changes that clip's scores."""
    run, test = trained_run["run"], trained_run["split"] / "test.csv"
    uids = pd.read_csv(test)["uid"].tolist()
    moved = tmp_path / "elsewhere"
    for uid in uids:
        shutil.copytree(trained_run["prefix"] / uid, moved / "study2" / uid)
    sf.write(moved / "study2" / uids[0] / "waveform.wav", 4 * tone(2000, 0.6, 8000, seed=99), 8000)
    assert main(["evaluate", "--run", str(run), "-d", str(test), "-o", str(tmp_path / "here")]) == 0
    assert main(["evaluate", "--run", str(run), "-d", str(test), "-i", str(moved), "-s", "study2",
                 "-o", str(tmp_path / "there")]) == 0
    here = pd.read_parquet(tmp_path / "here" / PREDICTIONS_FILE).set_index("uid")
    there = pd.read_parquet(tmp_path / "there" / PREDICTIONS_FILE).set_index("uid").loc[here.index]
    scores = [c for c in here.columns if c.startswith("score:")]
    changed = (here[scores] - there[scores]).abs().max(axis=1) > 1e-6
    assert changed.tolist() == [uid == uids[0] for uid in here.index]
    out = tmp_path / "emb.parquet"
    assert main(["extract", "--run", str(run), "-d", str(test), "--prefix", str(moved), "--study", "study2",
                 "--out", str(out)]) == 0
    assert sorted(pd.read_parquet(out)["uid"]) == sorted(uids)
    capsys.readouterr()
    assert main(["extract", "--run", str(run), "-d", str(test), "-i", str(moved), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert str(moved / uids[0]) in error and "metadata.json" in error


@pytest.mark.slow
def test_cloud_uploads_each_commands_outputs(trained_run: dict, gcs: Emulator, tmp_path: Path) -> None:
    """``--cloud -b BUCKET --cloud_dir DIR``: extract's parquet file (with its list of skipped rows) and
    evaluate's output folder are uploaded to gs://BUCKET/DIR/NAME, as written locally."""
    run, fs = trained_run["run"], gcs.fs()
    table = pd.read_csv(trained_run["split"] / "test.csv")
    scored = tmp_path / "scored.csv"
    pd.concat([table, table.head(1).assign(uid="ghost")]).to_csv(scored, index=False)  # no audio: skipped
    cloud = ["--cloud", "-b", BUCKET, "--cloud_dir", "seed/out"]
    assert main(["extract", "--run", str(run), "-d", str(scored), "--on_error", "skip", *cloud]) == 0
    local = run / embeddings_file("ft")
    assert fs.cat_file(f"{BUCKET}/seed/out/{local.name}") == local.read_bytes()
    skipped = fs.cat_file(f"{BUCKET}/seed/out/{local.stem}.skipped.csv").decode()
    assert "ghost" in skipped and skipped == (run / f"{local.stem}.skipped.csv").read_text()

    shutil.rmtree(run / EVALUATE_DIR, ignore_errors=True)
    assert main(["evaluate", "--run", str(run), "-d", str(trained_run["split"] / "test.csv"), *cloud]) == 0
    written = {p.relative_to(run / EVALUATE_DIR).as_posix() for p in (run / EVALUATE_DIR).rglob("*")
               if p.is_file() and not p.name.startswith(".")}
    uploaded = {Path(p).relative_to(f"{BUCKET}/seed/out/{EVALUATE_DIR}").as_posix()
                for p in fs.find(f"{BUCKET}/seed/out/{EVALUATE_DIR}")}
    assert METRICS_FILE in written and uploaded == written
    assert json.loads(fs.cat_file(f"{BUCKET}/seed/out/{EVALUATE_DIR}/{METRICS_FILE}")) == _metrics(run / EVALUATE_DIR)
    # an output in a bucket is written in a staging folder; --cloud still names it as given
    assert main(["evaluate", "--run", str(run), "-d", str(trained_run["split"] / "test.csv"),
                 "-o", f"gs://{BUCKET}/evals/e1", *cloud]) == 0
    assert fs.cat_file(f"{BUCKET}/seed/out/e1/{METRICS_FILE}") == fs.cat_file(f"{BUCKET}/evals/e1/{METRICS_FILE}")


def test_a_remote_model_file_names_its_remote_run(trained_run: dict, gcs: Emulator) -> None:
    run, fs = trained_run["run"], gcs.fs()
    for file in run.rglob("*"):
        if file.is_file() and not file.name.startswith(".") and EVALUATE_DIR not in file.parts:
            fs.put_file(str(file), f"{BUCKET}/runs/r1/{file.relative_to(run).as_posix()}")
    assert main(["evaluate", "--trained_mdl_path", f"gs://{BUCKET}/runs/r1/{MODEL_FILE}",
                 "-d", str(trained_run["split"] / "test.csv")]) == 0
    assert json.loads(fs.cat_file(f"{BUCKET}/runs/r1/{EVALUATE_DIR}/{METRICS_FILE}"))["data"]["n"] == 4


def test_a_run_in_a_bucket_is_never_replaced_by_an_evaluation_or_embeddings(trained_run: dict, gcs: Emulator,
                                                                            capsys: pytest.CaptureFixture) -> None:
    """evaluate -o and extract --out name the bucket's place, not the empty staging folder written first: a
    training run there is refused as a local one is (its metrics and predictions were replaced)."""
    run, fs = trained_run["run"], gcs.fs()
    for file in run.rglob("*"):
        if file.is_file() and not file.name.startswith(".") and EVALUATE_DIR not in file.parts:
            fs.put_file(str(file), f"{BUCKET}/runs/kept/{file.relative_to(run).as_posix()}")
    before = {name: fs.cat_file(f"{BUCKET}/runs/kept/{name}") for name in (METRICS_FILE, PREDICTIONS_FILE)}
    test = str(trained_run["split"] / "test.csv")
    capsys.readouterr()
    assert main(["evaluate", "--run", f"gs://{BUCKET}/runs/kept", "-d", test, "-o", f"gs://{BUCKET}/runs/kept"]) == 2
    assert f"-o gs://{BUCKET}/runs/kept: is a training run directory" in capsys.readouterr().err
    assert main(["extract", "--run", f"gs://{BUCKET}/runs/kept", "-d", test, "--out",
                 f"gs://{BUCKET}/runs/kept/{PREDICTIONS_FILE}"]) == 2
    assert f"--out gs://{BUCKET}/runs/kept/{PREDICTIONS_FILE}: holds another table" in capsys.readouterr().err
    assert {name: fs.cat_file(f"{BUCKET}/runs/kept/{name}") for name in before} == before
    # embeddings written there before are replaced
    out = f"gs://{BUCKET}/emb/e.parquet"
    kept = ["extract", "--run", f"gs://{BUCKET}/runs/kept", "-d", test, "--out", out]
    assert main([*kept, "--embedding_type", "pt"]) == 0 and main(kept) == 0


def test_each_command_names_the_list_it_would_skip_bad_audio_into(trained_run: dict, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """A clip without audio stops evaluate, extract, stats and cluster with one error naming it and the skip list that
    ``--on_error skip`` writes for that command: an evaluation's ``skipped.csv``, ``OUT.skipped.csv`` beside an
    output file; a later output without skipped rows removes the earlier list."""
    run, test = trained_run["run"], trained_run["split"] / "test.csv"
    table = pd.read_csv(test)
    scored = tmp_path / "scored.csv"
    pd.concat([table, table.head(1).assign(uid="ghost")]).to_csv(scored, index=False)
    out, stats = tmp_path / "emb.parquet", tmp_path / "stats.json"
    commands = {"skipped.csv": ["evaluate", "--run", str(run), "-d", str(scored), "-o", str(tmp_path / "ev")],
                "emb.skipped.csv": ["extract", "--run", str(run), "-d", str(scored), "--out", str(out)],
                "stats.skipped.csv": ["stats", "-i", str(trained_run["prefix"]), "-d", str(scored),
                                      "--out", str(stats)],
                "labels.skipped.csv": ["cluster", "--run", str(run), "-i", str(trained_run["prefix"]), "-d",
                                       str(scored), "--num_clusters", "2", "--out", str(tmp_path / "labels.parquet")]}
    for listed, argv in commands.items():
        capsys.readouterr()
        assert main(argv) == 2, argv[0]
        error = capsys.readouterr().err
        assert error.startswith(f"audiotune {argv[0]}: error: 1 audio file(s) cannot be used:\n  ")
        assert "ghost" in error and error.rstrip().endswith(f"they are then listed in {listed})"), error
    assert not out.exists() and not stats.exists()

    assert main([*commands["emb.skipped.csv"], "--on_error", "skip"]) == 0
    assert pd.read_csv(tmp_path / "emb.skipped.csv")["uid"].tolist() == ["ghost"]
    assert main(["extract", "--run", str(run), "-d", str(test), "--out", str(out)]) == 0
    assert out.exists() and not (tmp_path / "emb.skipped.csv").exists()  # it would name a row this file has
    # the rows of test.csv are its test split, as evaluate names them (predictions.parquet's split column)
    assert set(pd.read_parquet(out)["split"]) == {"test"}


def test_an_evaluation_that_skipped_rows_names_them_by_split_on_its_page(trained_run: dict, tmp_path: Path) -> None:
    """The skip list of an evaluation of one CSV names its rows by the section its scores are under (scored.csv:
    "scored"), and the page counts them beside the clips scored: the metrics are of the rest."""
    run, table = trained_run["run"], pd.read_csv(trained_run["split"] / "test.csv")
    scored = tmp_path / "scored.csv"
    pd.concat([table, table.head(2).assign(uid=["ghost", "wraith"])]).to_csv(scored, index=False)
    out = tmp_path / "ev"
    assert main(["evaluate", "--run", str(run), "-d", str(scored), "-o", str(out), "--on_error", "skip",
                 "--report"]) == 0
    assert set(pd.read_csv(out / "skipped.csv")["split"]) == {"scored"} and "scored" in _metrics(out)
    overview = (out / "report.html").read_text().split('<section id="overview">')[1].split("</section>")[0]
    assert "rows left out (listed in)" in overview and "2 (skipped.csv)" in overview
    assert "<td class=text>scored</td><td>4</td>" in overview


def test_a_remote_output_ends_as_a_local_one_would(trained_run: dict, gcs: Emulator, tmp_path: Path) -> None:
    """An evaluation in a bucket replaces the last one there as it does on a disk, and embeddings written again
    without skipped rows lose the list of the ones skipped before: no file of an earlier output is left beside
    the new one."""
    run, fs = trained_run["run"], gcs.fs()
    test = trained_run["split"] / "test.csv"
    ghost = tmp_path / "ghost.csv"
    pd.concat([pd.read_csv(test), pd.read_csv(test).head(1).assign(uid="ghost")]).to_csv(ghost, index=False)
    evaluation, out = f"gs://{BUCKET}/evals/e2", f"gs://{BUCKET}/emb/x.parquet"
    for table in (ghost, test):
        assert main(["evaluate", "--run", str(run), "-d", str(table), "-o", evaluation, "--on_error", "skip"]) == 0
        assert main(["evaluate", "--run", str(run), "-d", str(table), "-o", str(tmp_path / "e2"),
                     "--on_error", "skip"]) == 0
        assert main(["extract", "--run", str(run), "-d", str(table), "--out", out, "--on_error", "skip"]) == 0
        remote = {Path(p).relative_to(f"{BUCKET}/evals/e2").as_posix() for p in fs.find(f"{BUCKET}/evals/e2")}
        local = {p.relative_to(tmp_path / "e2").as_posix() for p in (tmp_path / "e2").rglob("*")
                 if p.is_file() and not p.name.startswith(".")}
        assert remote == local and (SKIPPED_FILE in remote) is (table == ghost)
        assert fs.exists(f"{BUCKET}/emb/x.skipped.csv") is (table == ghost)


def test_a_run_that_cannot_give_what_is_asked_is_named_with_its_config(trained_run: dict, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """Attention maps of an ECAPA-TDNN run, or a run whose config asks for a layer its backbone lacks: the error
    names the run (its config.yaml), not a flag the command line never gave."""
    import yaml

    audio = trained_run["prefix"] / "ann0" / "waveform.wav"
    assert main(["attention", "--run", str(trained_run["run"]), "--audio", str(audio), "-o", str(tmp_path / "m")]) == 2
    assert f"{trained_run['run'].resolve()}: a run of --model ecapa_tdnn, which does not expose attention" in \
        capsys.readouterr().err
    run = tmp_path / "run"
    shutil.copytree(trained_run["run"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["classifier"]["layer"] = 9
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "m.onnx")]) == 2
    assert f"{run.resolve() / 'config.yaml'}: --layer 9: the backbone has hidden states 0..0" in capsys.readouterr().err


def test_an_export_never_replaces_a_file_of_a_run_in_a_bucket(trained_run: dict, gcs: Emulator,
                                                              capsys: pytest.CaptureFixture) -> None:
    run, fs = trained_run["run"], gcs.fs()
    for file in run.rglob("*"):
        if file.is_file() and not file.name.startswith(".") and EVALUATE_DIR not in file.parts:
            fs.put_file(str(file), f"{BUCKET}/runs/exported/{file.relative_to(run).as_posix()}")
    before = fs.cat_file(f"{BUCKET}/runs/exported/{METRICS_FILE}")
    url = f"gs://{BUCKET}/runs/exported"
    capsys.readouterr()
    assert main(["export", "--run", url, "--format", "torchscript", "--out", f"{url}/metrics"]) == 2
    assert f"--out {url}/metrics: metrics.json is a file of the run itself" in capsys.readouterr().err
    assert fs.cat_file(f"{BUCKET}/runs/exported/{METRICS_FILE}") == before
