"""A tap2key model folder read and checked: its classes, its weights in either of the Trainer's formats, and each
problem named with its file before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import HF_TINY

from audiotune.engine.seed_import import SeedImportError
from audiotune.engine.seed_tap2key import import_tap2key_run, read_seed_classifier


def _saved(folder: Path, **config: object) -> Path:
    import transformers

    labels = {0: "q", 1: "w", 2: "none"}
    hf_config = transformers.Wav2Vec2Config(**{**HF_TINY, "num_hidden_layers": 1}, num_labels=3,
                                            classifier_proj_size=4, id2label=labels, **config)
    transformers.Wav2Vec2ForSequenceClassification(hf_config).save_pretrained(folder)
    return folder


def _edit_config(folder: Path, **values: object) -> None:
    raw = json.loads((folder / "config.json").read_text())
    raw.update(values)
    (folder / "config.json").write_text(json.dumps(raw))


def test_classes_in_id2label_order_and_weights_from_either_file(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = _saved(tmp_path / "model")
    read = read_seed_classifier(folder)
    assert (read.classes, read.architecture, read.encoder_prefix, read.bottleneck) == \
        (["q", "w", "none"], "Wav2Vec2ForSequenceClassification", "wav2vec2.", 4)
    state = load_file(folder / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin")  # an older Trainer's file, read weights only
    (folder / "model.safetensors").unlink()
    again = read_seed_classifier(folder)
    assert again.weights_file.name == "pytorch_model.bin" and again.state.keys() == read.state.keys()
    assert all(torch.equal(again.state[k], read.state[k]) for k in read.state)


@pytest.mark.parametrize("change, problem", [
    ({"id2label": {"0": "q", "1": "w"}}, "the classifier has 3 outputs; id2label in .*config.json names 2 classes"),
    ({"id2label": {"0": "q", "2": "w", "3": "none"}}, "does not name each output 0..2 once"),
    ({"id2label": {"0": "q", "1": "q", "2": "none"}}, "with distinct classes"),
    ({"architectures": ["BertForSequenceClassification"], "model_type": "bert"}, "not an audio sequence classifier"),
    ({"architectures": ["Wav2Vec2ForCTC"]}, r"architectures \['Wav2Vec2ForCTC'\]"),
])
def test_a_config_that_does_not_describe_the_weights_is_named(tmp_path: Path, change: dict, problem: str) -> None:
    folder = _saved(tmp_path / "model")
    _edit_config(folder, **change)
    with pytest.raises(SeedImportError, match=problem):
        import_tap2key_run(folder, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_or_unreadable_weights_are_named(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "model")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(SeedImportError, match=r"model.safetensors: cannot be read as safetensors"):
        read_seed_classifier(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(SeedImportError, match=r"model: no model.safetensors or pytorch_model.bin \(found: config."):
        read_seed_classifier(folder)
    (folder / "config.json").write_text("{")
    with pytest.raises(SeedImportError, match=r"config.json: not readable as JSON"):
        read_seed_classifier(folder)


def test_the_trainers_output_dir_gives_the_checkpoint_its_state_names_best(tmp_path: Path) -> None:
    """The seed never called save_model: its output_dir holds the save_total_limit last checkpoint-N folders, and
    the model it ended with (load_best_model_at_end) is the one the last trainer_state.json names best, recorded
    under the path where the seed trained."""
    out = tmp_path / "wav2vec2-base_2023-03-15_tap2key"
    seed_dir = "/work/ajgeglio/pretrained_models/wav2vec2-base_2023-03-15_tap2key"
    for step, best in ((300, 100), (400, 300), (100, 100)):  # checkpoint-400 is the last; it names 300 best
        folder = _saved(out / f"checkpoint-{step}")
        state = {"best_metric": 0.9, "global_step": step, "best_model_checkpoint": f"{seed_dir}/checkpoint-{best}"}
        (folder / "trainer_state.json").write_text(json.dumps(state))
    assert read_seed_classifier(out).folder == out / "checkpoint-300"
    done = import_tap2key_run(out, tmp_path / "run")
    assert done["folder"] == str(out / "checkpoint-300")
    assert "checkpoint-300: the checkpoint its trainer_state.json names best" in " ".join(done["notes"])
    (out / "checkpoint-400" / "trainer_state.json").write_text(json.dumps({"best_model_checkpoint": None}))
    with pytest.raises(SeedImportError, match=r"checkpoint-400/trainer_state.json: best_model_checkpoint None is not "
                                              r"in .*; give one of its checkpoint folders \(checkpoint-100, "
                                              r"checkpoint-300, checkpoint-400\)"):
        read_seed_classifier(out)


def test_the_trainers_log_history_becomes_the_runs_training_log(tmp_path: Path) -> None:
    """Its loss and eval F1 per logging step and epoch: the seed run's curves, as logs/metrics.csv here (the
    longest history of its checkpoints: the last one's, written after the best)."""
    import pandas as pd

    out = tmp_path / "wav2vec2-base_tap2key"
    history = [{"loss": 2.4, "learning_rate": 1e-4, "epoch": 0.5, "step": 50},
               {"eval_loss": 2.1, "eval_f1": 0.3, "eval_runtime": 1.2, "epoch": 1.0, "step": 100},
               {"loss": 1.9, "learning_rate": 9e-5, "epoch": 1.5, "step": 150},
               {"eval_loss": 1.7, "eval_f1": 0.5, "epoch": 2.0, "step": 200}]
    for step, entries in ((100, history[:2]), (200, history)):
        folder = _saved(out / f"checkpoint-{step}")
        state = {"best_model_checkpoint": f"/seed/{out.name}/checkpoint-100", "log_history": entries}
        (folder / "trainer_state.json").write_text(json.dumps(state))
    import_tap2key_run(out, tmp_path / "run")
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    assert log["epoch"].tolist() == [0, 0, 1, 1] and log["step"].tolist() == [50, 100, 150, 200]
    assert log["train_loss_step"].dropna().tolist() == [2.4, 1.9] and log["lr"].dropna().tolist() == [1e-4, 9e-5]
    assert log["val_loss"].dropna().tolist() == [2.1, 1.7] and log["val_weighted_f1"].dropna().tolist() == [0.3, 0.5]
    assert "val_runtime" not in log.columns
