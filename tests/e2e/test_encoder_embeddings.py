"""Embeddings without a trained classifier (the seeds' extraction without a fine-tuned model): a bare pretrained
encoder named by -c, the encoder of an SSAST pretrain run, and pt embeddings pooled over the SSAST tokens the user
chooses (the seed's --task at extraction) rather than the run's own."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audiotune.cli import main

# tiny SSAST on 32 mel bins x 64 frames: 16x16 patches give a 2 x 4 grid
SSAST_SHAPE = ["--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape", "16", "--tshape",
               "16", "--fstride", "16", "--tstride", "16"]


def matrix(path: Path) -> np.ndarray:
    return np.stack(pd.read_parquet(path)["embedding"].to_numpy())


@pytest.mark.slow
def test_a_bare_encoder_gives_the_pt_embeddings_of_an_untrained_run_of_it(uid_dataset: dict, hf_checkpoints: dict,
                                                                          tmp_path: Path) -> None:
    encoder, audio = str(hf_checkpoints["w2v_layer"]), ["-i", str(uid_dataset["prefix"])]
    test = str(uid_dataset["split"] / "test.csv")
    for layer in ("0", "1"):
        assert main(["extract", "-c", encoder, "--model", "hf", *audio, "-d", test, "--layer", layer,
                     "--out", str(tmp_path / f"bare{layer}.parquet")]) == 0
    bare = pd.read_parquet(tmp_path / "bare1.parquet")
    assert list(bare.columns) == ["uid", "split", "embedding"] and len(bare) == 4
    assert np.abs(matrix(tmp_path / "bare0.parquet") - matrix(tmp_path / "bare1.parquet")).max() > 1e-3
    # the way round it took before: a run trained for no epoch on a label file
    run = tmp_path / "run"
    assert main(["train", "--model", "hf", "-c", encoder, *audio, "-d", str(uid_dataset["split"]), "-l",
                 str(uid_dataset["labels"]), "-o", str(run), "-e", "0", "--clf_bottleneck", "8"]) == 0
    assert main(["extract", "--run", str(run), *audio, "-d", test, "--embedding_type", "pt", "--layer", "1",
                 "--out", str(tmp_path / "run.parquet")]) == 0
    np.testing.assert_allclose(matrix(tmp_path / "run.parquet"), matrix(tmp_path / "bare1.parquet"), atol=1e-5)
    assert list(pd.read_parquet(tmp_path / "run.parquet")["uid"]) == list(bare["uid"])
    # beside --run, --clip_length crops the clips embedded, as the seeds' extraction read it anew
    for name, argv in (("bare_crop", ["-c", encoder, "--model", "hf"]), ("run_crop", ["--run", str(run)])):
        assert main(["extract", *argv, *audio, "-d", test, "--embedding_type", "pt", "--layer", "1",
                     "--clip_length", "0.3", "--out", str(tmp_path / f"{name}.parquet")]) == 0
    np.testing.assert_allclose(matrix(tmp_path / "run_crop.parquet"), matrix(tmp_path / "bare_crop.parquet"),
                               atol=1e-5)
    assert np.abs(matrix(tmp_path / "run_crop.parquet") - matrix(tmp_path / "run.parquet")).max() > 1e-3
    assert main(["extract", "--run", str(run), *audio, "-d", test, "--clip_length", "0.3", "--eval_clip_length",
                 "0.4", "--out", str(tmp_path / "both.parquet")]) == 2
    assert not (tmp_path / "both.parquet").exists()


@pytest.mark.parametrize("argv, message", [
    (["-c", "ENC", "-d", "T", "--out", "e.parquet"], "name the pretrained encoder with -c CHECKPOINT --model NAME"),
    (["-c", "ENC", "--model", "hf", "-d", "T"], "--out: give the parquet file to write"),
    (["-c", "ENC", "--model", "hf", "-d", "T", "--out", "e.parquet", "--freeze", "False"],
     "--freeze: not an option of extract, which runs the encoder as it is"),
    (["-c", "ENC", "--model", "hf", "-d", "T", "--out", "e.parquet", "-pm", "cls"],
     "--pooling_mode cls: this backbone"),
    (["-c", "ENC", "--model", "hf", "-d", "T", "--out", "e.parquet", "--embedding_type", "ft"],
     "--embedding_type ft: without a trained classifier"),
    (["--model", "hf", "-d", "T", "--out", "e.parquet"], "name the pretrained encoder with -c CHECKPOINT"),
])
def test_a_bare_encoder_extraction_is_refused_before_writing(argv: list[str], message: str, hf_checkpoints: dict,
                                                             uid_dataset: dict, tmp_path: Path, capsys,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = {"ENC": str(hf_checkpoints["w2v_layer"]), "T": str(uid_dataset["split"] / "test.csv")}
    try:
        code = main(["extract", *[paths.get(word, word) for word in argv]])
    except SystemExit as refused:  # a flag extract does not take is refused as the command line is read
        code = refused.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "e.parquet").exists()


@pytest.mark.slow
def test_ssast_pretrain_run_and_token_pools_of_a_trained_run(uid_dataset: dict, tmp_path: Path, capsys) -> None:
    audio, test = ["-i", str(uid_dataset["prefix"])], ["-d", str(uid_dataset["split"] / "test.csv")]
    pre = tmp_path / "pre"
    assert main(["pretrain", "--model", "ssast", *audio, "-d", str(uid_dataset["split"]), "-o", str(pre),
                 *SSAST_SHAPE, "--mask_patch", "3", "-e", "1", "-bs", "4"]) == 0

    def extract(run: Path, name: str, *extra: str) -> np.ndarray:
        assert main(["extract", "--run", str(run), *audio, *test, *extra, "--out", str(tmp_path / name)]) == 0
        return matrix(tmp_path / name)

    # a pretrain run: pt embeddings by default (no heads), its patch tokens (pretraining pools them)
    assert main(["extract", "--run", str(pre), *audio, *test]) == 0
    own = matrix(pre / "embeddings_pt.parquet")
    assert own.shape == (4, 192) and np.isfinite(own).all()
    np.testing.assert_allclose(extract(pre, "avgtok.parquet", "-pm", "avgtok"), own)
    cls = extract(pre, "cls.parquet", "-pm", "cls")
    assert np.abs(cls - own).max() > 1e-3
    np.testing.assert_allclose(extract(pre, "task_cls.parquet", "--task", "ft_cls"), cls)  # the seed's spelling
    assert np.abs(extract(pre, "wt.parquet", "--embedding_type", "wt") - own).max() > 1e-3
    # the same encoder read from the original-layout file it wrote, as a bare checkpoint
    assert main(["extract", "-c", str(pre / "ssast_original.pth"), "--model", "ssast", *SSAST_SHAPE, "--task",
                 "ft_avgtok", *audio, *test, "--out", str(tmp_path / "bare.parquet")]) == 0
    np.testing.assert_allclose(matrix(tmp_path / "bare.parquet"), own, atol=1e-5)

    # a run fine-tuned on the cls tokens: pt embeddings of its patch tokens on request
    run = tmp_path / "ft"
    assert main(["train", "--model", "ssast", *audio, "-d", str(uid_dataset["split"]), "-l",
                 str(uid_dataset["labels"]), "-o", str(run), *SSAST_SHAPE, "--task", "ft_cls",
                 "--pretrained_mdl_path", str(pre / "model.safetensors"), "-e", "0", "--clf_bottleneck", "8"]) == 0
    np.testing.assert_allclose(extract(run, "run_pt.parquet", "--embedding_type", "pt"), cls, atol=1e-5)
    avgtok = extract(run, "run_avgtok.parquet", "--embedding_type", "pt", "-pm", "avgtok")
    np.testing.assert_allclose(avgtok, own, atol=1e-5)
    np.testing.assert_allclose(extract(run, "run_task.parquet", "--embedding_type", "pt", "--task", "ft_avgtok"),
                               avgtok)
    capsys.readouterr()
    for extra, message in ((["-pm", "avgtok"], "--pooling_mode avgtok: chooses the tokens of pt embeddings"),
                           (["--task", "pretrain_joint"], "--task pretrain_joint: at extraction"),
                           (["--resample_rate", "8000"], "--resample_rate: options of a pretrained encoder")):
        assert main(["extract", "--run", str(run), *audio, *test, *extra, "--out", str(tmp_path / "x.parquet")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
def test_a_wav2vec2_pretrain_run_embeds_with_the_encoder_it_adapted(uid_dataset: dict, hf_checkpoints: dict,
                                                                    tmp_path: Path) -> None:
    encoder, audio = str(hf_checkpoints["w2v_layer"]), ["-i", str(uid_dataset["prefix"])]
    test = ["-d", str(uid_dataset["split"] / "test.csv"), "--layer", "1"]
    tapt = tmp_path / "tapt"
    assert main(["pretrain", "--model", "hf", "-c", encoder, "--objective", "tapt", "--fresh_quantizer", *audio,
                 "-d", str(uid_dataset["split"]), "-o", str(tapt), "-e", "1", "-bs", "4", "-lr", "1e-2"]) == 0
    assert main(["extract", "--run", str(tapt), *audio, *test]) == 0
    adapted = matrix(tapt / "embeddings_pt.parquet")
    assert main(["extract", "-c", str(tapt / "encoder"), "--model", "hf", *audio, *test, "--out",
                 str(tmp_path / "folder.parquet")]) == 0
    np.testing.assert_allclose(matrix(tmp_path / "folder.parquet"), adapted, atol=1e-6)
    assert main(["extract", "-c", encoder, "--model", "hf", *audio, *test, "--out",
                 str(tmp_path / "before.parquet")]) == 0
    assert np.abs(matrix(tmp_path / "before.parquet") - adapted).max() > 1e-3  # pretraining changed the encoder
