"""`audiotune import ser|clusters|taps`: the emotion seed's Lightning checkpoints and cluster labels, and tap2key's
sample folders, re-created as the seeds wrote them, become what pretraining and training read."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import HF_TINY, save_hf_checkpoint
from torch import nn

from audiotune.cli import main


def _tiny_wav2vec2(**extra: object):
    import transformers

    return transformers.Wav2Vec2Config(**{**HF_TINY, **extra})


def lightning_checkpoint(path: Path, state: dict, **extra: object) -> Path:
    """What PyTorch Lightning 1.4 saved: the state dict beside bookkeeping, each callback's state keyed by its
    class (a pickled reference to the class)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    torch.save({"epoch": 3, "global_step": 20000, "pytorch-lightning_version": "1.4.5", "state_dict": state,
                "callbacks": {ModelCheckpoint: {"monitor": None, "best_model_score": None, "current_score": None,
                                                "best_model_path": "", "dirpath": "pretrain/checkpoints"}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}],
                "lr_schedulers": [{"base_lrs": [1e-4], "last_epoch": 20000, "_step_count": 20001}], **extra}, path)
    return path


def as_transformers_4_10(state: dict) -> dict:
    """Weight-norm keys as the seed's transformers (4.10) named them."""
    for new, old in ((".parametrizations.weight.original0", ".weight_g"),
                     (".parametrizations.weight.original1", ".weight_v")):
        state = {k.replace(new, old): v for k, v in state.items()}
    return state


@pytest.mark.slow
def test_ser_tapt_checkpoint_becomes_an_encoder_folder_with_its_quantizer(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    architecture = save_hf_checkpoint(transformers.Wav2Vec2Model(_tiny_wav2vec2()), tmp_path / "wav2vec2-base")

    class PretrainWrapper(nn.Module):  # Wav2vec2PretrainWrapper: one model registered twice
        def __init__(self) -> None:
            super().__init__()
            self.wav2vec2PT = transformers.Wav2Vec2ForPreTraining(_tiny_wav2vec2())
            self.wav2vec2 = self.wav2vec2PT.wav2vec2

    tapt = nn.Module()  # ContinueFinetuningBaseline's parameters
    tapt.wav2vec2 = PretrainWrapper()
    checkpoint = lightning_checkpoint(tmp_path / "last.ckpt", as_transformers_4_10(tapt.state_dict()))
    assert main(["import", "ser", str(checkpoint), "-c", str(architecture), "--out", str(tmp_path / "enc")]) == 0
    out = capsys.readouterr().out
    assert "with TAPT's quantizer" in out and "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in out
    imported = transformers.Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "enc").eval()
    seed = tapt.wav2vec2.wav2vec2PT.eval()
    assert all(torch.equal(value, imported.state_dict()[key]) for key, value in seed.state_dict().items())
    wave = torch.randn(1, 4000)
    with torch.no_grad():
        assert torch.allclose(imported.wav2vec2(wave).last_hidden_state, seed.wav2vec2(wave).last_hidden_state)
    # the seed fed its encoders soundfile's samples as they are: the folder's extractor does not normalise
    assert transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "enc").do_normalize is False
    assert transformers.AutoFeatureExtractor.from_pretrained(architecture).do_normalize is True
    import soundfile as sf
    from conftest import tone

    (tmp_path / "audio").mkdir()
    for index in range(4):
        sf.write(tmp_path / "audio" / f"{index}.wav", tone(300 + 100 * index, 0.5, 16000, seed=index), 16000)
    assert main(["pretrain", "--model", "hf", "-c", str(tmp_path / "enc"), "--objective", "tapt", "-d",
                 str(tmp_path / "audio"), "-o", str(tmp_path / "tapt"), "--training_steps", "1", "-bs", "2",
                 "--clip_length", "0"]) == 0  # TAPT continues from the seed's quantizer


@pytest.mark.slow
def test_ser_vft_checkpoint_gives_its_fine_tuned_encoder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    architecture = save_hf_checkpoint(transformers.Wav2Vec2Model(_tiny_wav2vec2()), tmp_path / "wav2vec2-base")
    head = nn.Module()  # PretrainedRNNHead under DownstreamGeneral.model
    head.wav2vec2 = nn.Module()
    head.wav2vec2.wav2vec2 = transformers.Wav2Vec2ForPreTraining(_tiny_wav2vec2()).wav2vec2
    head.rnn_head = nn.LSTM(32, 256, 1, bidirectional=True)
    head.linear_head = nn.Sequential(nn.ReLU(), nn.Linear(32, 4))
    vft = nn.Module()
    vft.model = head
    checkpoint = lightning_checkpoint(tmp_path / "vft.ckpt", as_transformers_4_10(vft.state_dict()))
    assert main(["import", "ser", str(checkpoint), "-c", str(architecture), "--out", str(tmp_path / "enc")]) == 0
    assert "not carried: model.linear_head, model.rnn_head" in capsys.readouterr().out
    assert main(["import", "ser", str(checkpoint), "-c", str(architecture), "--out", str(tmp_path / "enc")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err  # never replaced
    imported = transformers.AutoModel.from_pretrained(tmp_path / "enc").eval()
    wave = torch.randn(1, 4000)
    with torch.no_grad():
        assert torch.allclose(imported(wave).last_hidden_state, head.wav2vec2.wav2vec2.eval()(wave).last_hidden_state)


def test_a_checkpoint_that_runs_code_is_refused_before_it_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    checkpoint = lightning_checkpoint(tmp_path / "last.ckpt", {"wav2vec2.wav2vec2.x": torch.zeros(1)},
                                      hyper_parameters=Payload())
    assert main(["import", "ser", str(checkpoint), "--out", str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err
    assert f"{checkpoint}: refused as a checkpoint" in err and "system" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "enc").exists()


def test_a_file_that_is_no_checkpoint_is_said_to_be_none(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert main(["import", "ser", str(junk), "--out", str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"audiotune import: error: {junk}: not a torch checkpoint (damaged, or a file of another "
                          "format; torch: Unsupported operand ")
    assert len(err.splitlines()) == 1 and "documentation" not in err and not (tmp_path / "enc").exists()


@pytest.mark.slow
def test_seed_cluster_labels_feed_ptapt_pretraining(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """all-clus.json → parquet; P-TAPT pretraining of a wav2vec2 with the seed's frame geometry reads it."""
    import json

    import soundfile as sf
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("faiss")
    from conftest import tone

    from audiotune.data.pseudo_labels import read_pseudo_labels

    geometry = {"conv_dim": (16,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2)}
    torch.manual_seed(0)
    encoder = save_hf_checkpoint(transformers.Wav2Vec2ForPreTraining(_tiny_wav2vec2(**geometry)), tmp_path / "w2v")
    audio = tmp_path / "Audio_16k"
    audio.mkdir()
    rng = np.random.default_rng(0)
    clusters, split = {}, {"Train": {}, "Val": {}, "Test": {}}
    for index, seconds in enumerate((0.6, 0.7, 0.8, 0.9)):
        name = f"Ses01F_impro0{index}_F000.wav"
        sf.write(audio / name, tone(200 + 100 * index, seconds, 16000, seed=index), 16000)
        frames = (int(seconds * 16000) - 400) // 320 + 1
        frames += {0: 1, 1: -1}.get(index, 0)  # the seed's wav2vec v1 frames: one more or one fewer
        clusters[name] = [rng.integers(0, k, frames).tolist() for k in (4, 8)]
        split["Train" if index < 3 else "Val"][name] = ["happy", "sad"][index % 2]
    (tmp_path / "all-clus.json").write_text(json.dumps(clusters))
    (tmp_path / "fold1.json").write_text(json.dumps(split))
    labels = tmp_path / "labels.parquet"
    assert main(["import", "clusters", str(tmp_path / "all-clus.json"), "--num_clusters", "4,8", "--audio_dir",
                 str(audio), "--out", str(labels)]) == 0
    assert "4 clips x K=[4, 8]; 2 clip(s) fitted" in capsys.readouterr().out
    read = read_pseudo_labels(str(labels))
    first = read.labels["Ses01F_impro00_F000.wav"]
    assert read.num_clusters == [4, 8] and np.array_equal(first[8], clusters["Ses01F_impro00_F000.wav"][1][:-1])
    assert main(["pretrain", "--model", "hf", "-c", str(encoder), "--objective", "ptapt", "--pseudo_labels",
                 str(labels), "-d", str(tmp_path / "fold1.json"), "-i", str(audio), "-o", str(tmp_path / "ptapt"),
                 "-bs", "2", "-e", "1", "--mask_time_length", "3", "--max_seconds", "0.5"]) == 0
    # the K values in another order than the seed's are refused, naming the clip
    assert main(["import", "clusters", str(tmp_path / "all-clus.json"), "--num_clusters", "8", "4",
                 "--out", str(tmp_path / "wrong.parquet")]) == 2
    assert "labels outside 0..3 for K=4" in capsys.readouterr().err and not (tmp_path / "wrong.parquet").exists()


@pytest.mark.slow
def test_tap2key_sample_folders_become_a_segment_table_that_trains(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    import soundfile as sf
    from conftest import SMALL_ECAPA, save_to_disk, tone

    def recording(name: str, take: str, keys: list[str], samples: int) -> Path:
        folder = tmp_path / name
        (folder / "05.wav_samples").mkdir(parents=True)
        (folder / "04.labels").mkdir()
        for i in range(samples):  # as WavPreprocess.py: 8192 x 8 float64 at 96 kHz
            wave = tone(500 + 300 * i, 8192 / 96000, 96000, seed=i, channels=8).astype(np.float64)
            sf.write(folder / "05.wav_samples" / f"{take}_{i:03}_8chan.wav", wave, 96000, subtype="DOUBLE")
        rows = [f"2023-03-15 14:02:{33 + i}.250000,{key},{700 + 10 * i},{894},12" for i, key in enumerate(keys)]
        (folder / "04.labels" / f"{take}_label.csv").write_text("\n".join(rows) + "\n")
        return folder

    good = recording("rec1", "2023-03-15.14.02.33.250000", ["q", "w", "q", "w", "q", "w"], 6)
    bad = recording("rec2", "2023-03-15.14.10.00.000000", ["e", "r", "e"], 2)
    out = tmp_path / "taps" / "segments.csv"
    assert main(["import", "taps", str(good), str(bad), "--out", str(out)]) == 2
    assert "rec2/2023-03-15.14.10.00.000000: 2 tap samples, 3 labels" in capsys.readouterr().err
    assert not out.exists()
    assert main(["import", "taps", str(good), str(bad), "--out", str(out), "--on_error", "skip"]) == 0
    table = pd.read_csv(out)
    assert table["label"].tolist() == ["q", "w"] * 3 and table["path"][1] == \
        "../rec1/05.wav_samples/2023-03-15.14.02.33.250000_001_8chan.wav"
    assert pd.read_csv(out.with_suffix(".skipped.csv"))["session"].tolist() == ["2023-03-15.14.10.00.000000"]
    # the test split create_dataset.py saved names samples where the seed kept them: found by name in --audio_dir
    names = ["2023-03-15.14.02.33.250000_004_8chan.wav", "2023-03-15.14.02.33.250000_001_8chan.wav"]
    saved = save_to_disk(tmp_path / "04.Test_Dataset_96k", [f"/work/ajgeglio/Tap_Data/{n}" for n in names], [0, 1],
                         ["q", "w"], audio_feature=True)
    assert main(["import", "taps", str(saved), "--audio_dir", str(good / "05.wav_samples"), "--out",
                 str(tmp_path / "taps" / "test.csv")]) == 0
    seed_test = pd.read_csv(tmp_path / "taps" / "test.csv").set_index("uid")
    assert seed_test[["path", "label"]].equals(table.set_index("uid").loc[seed_test.index, ["path", "label"]])
    (tmp_path / "labels.txt").write_text("label\n")
    split = tmp_path / "split"  # beside taps/: the rows' relative paths hold from there too
    split.mkdir()
    table.iloc[:4].to_csv(split / "train.csv", index=False)
    table.iloc[4:].to_csv(split / "test.csv", index=False)
    assert main(["train", "-d", str(split), "-l", str(tmp_path / "labels.txt"), "-o", str(tmp_path / "run"),
                 *SMALL_ECAPA, "--channel_mode", "interleave", "--resample_rate", "16000", "--clip_length", "0",
                 "--val_size", "0", "-e", "1", "-bs", "2"]) == 0
