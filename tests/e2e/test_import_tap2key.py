"""`audiotune import tap2key`: a model of the tap2key seed, saved as its Hugging Face Trainer saved it, becomes the
run `train --config seeds/tap2key` builds, whose evaluation gives the seed model's own scores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import HF_TINY, tone

from audiotune.cli import main
from audiotune.config import load_config
from audiotune.data.loading import collator, make_dataset
from audiotune.data.prepare import prepare_eval_data
from audiotune.models.backbones import input_spec

CLASSES = ["w", "e", "q"]  # id2label's order, not the alphabetical one audiotune's own training gives


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOTUNE_CACHE", str(tmp_path / "cache"))


def seed_model(folder: Path, transformers_4_26: bool = False, **config: object):
    """A tiny Wav2Vec2ForSequenceClassification saved as the seed's Trainer saved it (no preprocessor config);
    ``transformers_4_26``: as pytorch_model.bin with that release's weight-norm names, as the seed's own run."""
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.Wav2Vec2Config(**HF_TINY, num_labels=len(CLASSES), classifier_proj_size=8,
                                            id2label=dict(enumerate(CLASSES)),
                                            label2id={c: i for i, c in enumerate(CLASSES)}, **config)
    model = transformers.Wav2Vec2ForSequenceClassification(hf_config).eval()
    with torch.no_grad():  # a trained head: scores far enough apart to tell the classes
        model.projector.weight.normal_(0, 1)
        model.classifier.weight.normal_(0, 0.15)
    model.save_pretrained(folder)
    if transformers_4_26:
        state = {k.replace(".parametrizations.weight.original0", ".weight_g")
                  .replace(".parametrizations.weight.original1", ".weight_v"): v for k, v in model.state_dict().items()}
        torch.save(state, folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    return model


def tap_table(root: Path) -> Path:
    """Five 8-channel 96 kHz tap samples (8192 frames, as WavPreprocess.py cut them) in a segment table."""
    (root / "taps").mkdir(exist_ok=True)
    rows = []
    for i in range(5):
        wave = np.stack([tone(300 + 170 * c + 90 * i, 0.1, 96000, seed=10 * i + c)[:8192] for c in range(8)], 1)
        path = root / "taps" / f"tap_{i:03}_8chan.wav"
        sf.write(path, wave.astype(np.float64), 96000, subtype="DOUBLE")
        rows.append({"uid": f"tap_{i:03}", "path": str(path), "label": CLASSES[i % 3]})
    table = root / "segments.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def test_tap2key_model_becomes_a_run_that_scores_as_the_seed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    seed = seed_model(tmp_path / "wav2vec2-base_tap2key", transformers_4_26=True)
    run = tmp_path / "run"
    assert main(["import", "tap2key", str(tmp_path / "wav2vec2-base_tap2key"), "--out", str(run)]) == 0
    assert "classes w e q" in capsys.readouterr().out
    again = ["import", "tap2key", str(tmp_path / "wav2vec2-base_tap2key"), "--out", str(run)]
    assert main(again) == 2 and f"{run}: already holds a run; pass --overwrite" in capsys.readouterr().err
    assert main([*again, "--overwrite"]) == 0
    config = load_config(run / "config.yaml")
    assert (config.classifier.clf_bottleneck, config.classifier.activation, config.classifier.final_dropout,
            config.classifier.pooling_mode, config.audio.channel_mode, config.audio.resample_rate) == \
        (8, "none", 0.0, "mean", "interleave", 16000)
    assert [(h.name, h.kind, h.columns, h.classes) for h in config.heads] == [("label", "categorical", ["label"],
                                                                                CLASSES)]
    record = json.loads((run / "import.json").read_text())
    assert record["weights"].endswith("pytorch_model.bin") and record["classes"] == CLASSES
    assert record["mapped"]["projector."] == "classifiers.0.head.dense."
    # no preprocessor_config.json beside the seed's model: each clip normalised, as its wav2vec2-base extractor did
    spec = input_spec(config)
    assert spec.waveform_norm and spec.resample_rate == 16000

    table = tap_table(tmp_path)
    assert main(["evaluate", "--run", str(run), "-d", str(table), "-o", str(run / "eval"), "-bs", "2"]) == 0
    predictions = pd.read_parquet(run / "eval" / "predictions.parquet").set_index("uid")
    prepared = prepare_eval_data(config, spec, str(table))
    split = next(iter(prepared.tables))
    dataset = make_dataset(config, spec, prepared.tables[split], prepared.targets[split])
    collate = collator(dataset)  # one clip as the run's data layer gives it: interleaved, 16 kHz, normalised
    names = [f"score:label={c}" for c in CLASSES]
    worst = 0.0
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            inputs = collate([item])["inputs"]
            assert inputs.shape == (1, 8 * 1366)  # 8 channels interleaved, each at 16 kHz (the seed's ceil(8192 / 6))
            expected = seed(inputs).logits.softmax(-1).numpy()[0]
            got = predictions.loc[item["uid"], names].to_numpy(np.float64)
            worst = max(worst, float(np.abs(got - expected).max()))
    assert worst <= 1e-4 and len(dataset) == 5
    scores = predictions[names].to_numpy()
    assert np.ptp(scores, axis=1).min() > 0.5 and np.ptp(scores, axis=0).max() > 1e-3  # classes and clips apart

    # the run's encoder is a save_pretrained folder that -c reads (with the seed's feature extractor)
    assert (run / "encoder" / "preprocessor_config.json").is_file()


def test_a_folder_that_is_no_tap2key_model_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import transformers

    weighted = tmp_path / "weighted"
    seed_model(weighted, use_weighted_layer_sum=True)
    bare = tmp_path / "bare"
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)).save_pretrained(bare)
    unnamed = tmp_path / "unnamed"
    seed_model(unnamed)
    raw = json.loads((unnamed / "config.json").read_text())
    del raw["id2label"]
    (unnamed / "config.json").write_text(json.dumps(raw))
    capsys.readouterr()
    for folder, problem in ((weighted, f"{weighted / 'config.json'}: use_weighted_layer_sum is true"),
                            (bare, f"{bare / 'config.json'}: architectures ['Wav2Vec2Model']"),
                            (unnamed, f"{unnamed / 'config.json'}: no id2label"),
                            (tmp_path / "missing", f"{tmp_path / 'missing'}: not a folder")):
        assert main(["import", "tap2key", str(folder), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert problem in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_training_from_the_seed_folder_says_its_head_is_not_used(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "wav2vec2-base_tap2key"
    seed_model(folder)
    split = tmp_path / "split"
    split.mkdir()
    table = pd.read_csv(tap_table(tmp_path))
    table.iloc[:3].to_csv(split / "train.csv", index=False)
    table.iloc[[3]].to_csv(split / "val.csv", index=False)
    table.iloc[[4]].to_csv(split / "test.csv", index=False)
    (tmp_path / "labels.txt").write_text("label:categorical\n")
    assert main(["train", "--config", "seeds/tap2key", "-c", str(folder), "-d", str(split), "-l",
                 str(tmp_path / "labels.txt"), "-o", str(tmp_path / "again"), "-e", "0", "-bs", "2",
                 "--mask_time_length", "2"]) == 0
    said = [r.getMessage() for r in caplog.records if "(projector, classifier) are not used" in r.getMessage()]
    assert len(said) == 1 and "4 tensor(s) of its head" in said[0], said
    assert f"`audiotune import tap2key {folder} -o RUN` keeps them" in said[0]
