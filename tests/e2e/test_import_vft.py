"""`audiotune import ser --classes`: the emotion seed's V-FT classifier, re-created as the seed built and saved it,
becomes a run whose evaluation, extraction and continued training read the seed model's own predictions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from conftest import HF_TINY, save_hf_checkpoint, tone
from test_import_ser_taps import as_transformers_4_10, lightning_checkpoint
from torch import nn

from audiotune.cli import main
from audiotune.config import load_config
from audiotune.models.backbones import input_spec
from audiotune.models.checkpoint import load_run

CLASSES = ["neutral", "sad", "anger", "happy"]  # the seed's emoset order, whatever it was


def prepare_mask(length: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The seed's FeatureFuser.prepare_mask: True before each clip's frame count (cumsum trick)."""
    mask = torch.zeros(shape)
    mask[(torch.arange(shape[0]), length - 1)] = 1
    return mask.flip([-1]).cumsum(-1).flip([-1]).bool()


class SeedVFT(nn.Module):
    """PretrainedRNNHead(n_classes, backend='wav2vec2') in eval mode: Wav2vec2Wrapper (CNN and projection, an
    encoder mask from the lengths, the encoder, ReLU), the mean over the first out_len - 1 frames, ReLU, Linear;
    the LSTM is built and never called."""

    def __init__(self, config) -> None:
        import transformers

        super().__init__()
        self.wav2vec2 = nn.Module()
        self.wav2vec2.wav2vec2 = transformers.Wav2Vec2ForPreTraining(config).wav2vec2
        self.rnn_head = nn.LSTM(config.hidden_size, 256, 1, bidirectional=True)
        self.linear_head = nn.Sequential(nn.ReLU(), nn.Linear(config.hidden_size, len(CLASSES)))

    def forward(self, wave: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        w2v = self.wav2vec2.wav2vec2
        feats = w2v.feature_extractor(wave).transpose(1, 2)
        feats = w2v.feature_projection(feats)[0]
        frames = w2v._get_feat_extract_output_lengths(length)
        reps = F.relu(w2v.encoder(feats, attention_mask=prepare_mask(frames, feats.shape[:2]))[0])
        last_feat_pos = frames - 1
        masks = (torch.arange(reps.size(1)).expand(len(last_feat_pos), -1) < last_feat_pos[:, None]).float()
        pooled = (reps * masks[..., None]).sum(1) / last_feat_pos[:, None]
        self.pooled = pooled
        return self.linear_head(pooled)


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOTUNE_CACHE", str(tmp_path / "cache"))


def seed_data(root: Path) -> Path:
    """Five 16 kHz clips of different lengths and the seed's label JSON (all five in Test, as a fold file)."""
    audio = root / "Audio_16k"
    audio.mkdir()
    split: dict[str, dict[str, str]] = {"Train": {}, "Val": {}, "Test": {}}
    for index, seconds in enumerate((0.45, 0.6, 0.77, 0.9, 1.13)):
        name = f"Ses01F_impro0{index}_F00{index}.wav"
        sf.write(audio / name, tone(180 + 90 * index, seconds, 16000, seed=index), 16000, subtype="FLOAT")
        sf.write(audio.parent / f"train_{name}", tone(200 + 90 * index, seconds, 16000, seed=index), 16000)
        split["Test"][name] = CLASSES[index % len(CLASSES)]
        split["Train"][f"../train_{name}"] = CLASSES[index % len(CLASSES)]
    (root / "fold1.json").write_text(json.dumps(split))
    return audio


@pytest.mark.slow
def test_ser_vft_checkpoint_becomes_a_run_that_scores_as_the_seed(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.Wav2Vec2Config(**HF_TINY)
    torch.manual_seed(0)
    architecture = save_hf_checkpoint(transformers.Wav2Vec2Model(config), tmp_path / "wav2vec2-base")
    seed = SeedVFT(config).eval()
    with torch.no_grad():  # a trained head: outputs far enough apart to tell the frames pooled
        seed.linear_head[1].weight.mul_(20)
    vft = nn.Module()  # DownstreamGeneral
    vft.model = seed
    checkpoint = lightning_checkpoint(tmp_path / "vft.ckpt", as_transformers_4_10(vft.state_dict()))
    audio = seed_data(tmp_path)
    run = tmp_path / "run"
    assert main(["import", "ser", str(checkpoint), "-c", str(architecture), "--out", str(run), "--classes",
                 *CLASSES]) == 0
    assert "not carried: model.rnn_head.weight_ih_l0" in capsys.readouterr().out
    # run_downstream_custom.py's eager.pt (the PretrainedRNNHead's own state dict) imports as the same model
    torch.save(as_transformers_4_10(seed.state_dict()), tmp_path / "eager.pt")
    assert main(["import", "ser", str(tmp_path / "eager.pt"), "-c", str(architecture), "--out",
                 str(tmp_path / "run_eager"), "--classes", *CLASSES]) == 0
    from_eager, from_checkpoint = load_run(tmp_path / "run_eager")[1].state_dict(), load_run(run)[1].state_dict()
    assert from_eager.keys() == from_checkpoint.keys()
    assert all(torch.equal(from_eager[key], from_checkpoint[key]) for key in from_checkpoint)
    imported = load_config(run / "config.yaml")
    assert (imported.classifier.frame_activation, imported.classifier.pool_drop_last,
            imported.classifier.clf_bottleneck, imported.heads[0].classes) == ("relu", True, 0, CLASSES)

    assert main(["evaluate", "--run", str(run), "-d", str(tmp_path / "fold1.json"), "-i", str(audio), "-o",
                 str(run / "eval"), "-bs", "1"]) == 0
    predictions = pd.read_parquet(run / "eval" / "predictions.parquet").set_index("uid")
    assert main(["extract", "--run", str(run), "-d", str(tmp_path / "fold1.json"), "-i", str(audio),
                 "--embedding_type", "pt", "--out", str(tmp_path / "pt.parquet"), "-bs", "1"]) == 0
    embeddings = pd.read_parquet(tmp_path / "pt.parquet").set_index("uid")
    _, model = load_run(run)
    names = [f"score:label={name}" for name in CLASSES]
    worst = {"logits": 0.0, "scores": 0.0, "pt": 0.0}
    with torch.no_grad():
        for path in sorted(audio.iterdir()):
            wave, _ = sf.read(path, dtype="float32")  # as the seed's dataset read it, whole (its test batches of 1)
            expected = seed(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            got = model(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            scores = predictions.loc[path.name, names].to_numpy(np.float64)
            worst["logits"] = max(worst["logits"], float((got - expected).abs().max()))
            worst["scores"] = max(worst["scores"], float(np.abs(scores - expected.softmax(-1)[0].numpy()).max()))
            worst["pt"] = max(worst["pt"], float(np.abs(embeddings.loc[path.name, "embedding"] -
                                                        seed.pooled[0].numpy()).max()))
    assert max(worst.values()) <= 1e-4, worst
    assert (predictions["split"] == "test").sum() == 5
    print("worst |difference| from the seed model:", worst)

    # each option is the seed's: without either, the logits move
    for option, value in (("frame_activation", "none"), ("pool_drop_last", False)):
        changed = load_config(run / "config.yaml")
        setattr(changed.classifier, option, value)
        other = type(model)(model.backbone, changed.heads, changed.classifier).eval()
        other.load_state_dict(model.state_dict())
        wave = torch.from_numpy(sf.read(next(audio.iterdir()), dtype="float32")[0])[None]
        length = torch.tensor([wave.shape[1]])
        with torch.no_grad():
            assert (other(wave, length) - model(wave, length)).abs().max() > 1e-3, option

    # the run's data path reads the clips as the seed did: whole, not normalised
    spec = input_spec(load_run(run)[0])
    assert (spec.waveform_norm, spec.eval_clip_length) == (False, 0.0)

    # the run's options train a new model: its config and the fine-tuned encoder
    assert main(["train", "--config", str(run / "config.yaml"), "-c", str(run / "encoder"), "-d",
                 str(tmp_path / "fold1.json"), "-i", str(audio), "-o", str(tmp_path / "again"), "-e", "0",
                 "-bs", "2", "--val_size", "0"]) == 0
    again = load_config(tmp_path / "again" / "config.yaml")
    assert (again.classifier.frame_activation, again.classifier.pool_drop_last) == ("relu", True)

    # --resume: no seed saved its optimiser; training goes on from the imported weights (the seed's class order
    # mapped onto the data's), said in one line and recorded; without the run's options, one line naming them
    resume = ["train", "--resume", "-o", str(run), "-d", str(tmp_path / "fold1.json"), "-i", str(audio), "-bs", "2",
              "--val_size", "0"]
    capsys.readouterr()
    assert main([*resume, "-e", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--config {run / 'config.yaml'}" in err and len(err.strip().splitlines()) == 1
    assert main([*resume, "--config", str(run / "config.yaml"), "-e", "0"]) == 0
    history = yaml.safe_load((run / "config_history.yaml").read_text())
    assert "fresh optimiser" in history[-1]["started_from"] and "started_from" in json.loads(
        (run / "metrics.json").read_text())
    continued = pd.read_parquet(run / "predictions.parquet").set_index("uid")
    test = predictions[predictions["split"] == "test"]
    assert np.abs(continued.loc[test.index, names].to_numpy() - test[names].to_numpy()).max() <= 1e-5
    assert load_config(run / "config.yaml").heads[0].classes == sorted(CLASSES)
    before = load_run(run)[1].state_dict()
    assert main([*resume, "--config", str(run / "config.yaml"), "-e", "1", "--mask_feature_length", "8",
                 "--mask_time_length", "2"]) == 0  # the tiny encoder is narrower and shorter than the seed masks
    after = load_run(run)[1].state_dict()
    assert not torch.equal(before["classifiers.0.head.outproj.weight"], after["classifiers.0.head.outproj.weight"])
    assert len(yaml.safe_load((run / "config_history.yaml").read_text())) == 2

