"""`train --resume` of an imported run: where it starts from, and the seed's class order mapped onto the data's."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiotune.config import HeadSpec, RunConfig
from audiotune.engine.seed_resume import imported_start, in_class_order
from audiotune.outputs import CHECKPOINT_DIR, ENCODER_DIR, IMPORT_RECORD_FILE, LAST_CHECKPOINT, MODEL_FILE


def _head(*classes: str, name: str = "label") -> HeadSpec:
    return HeadSpec(name=name, kind="categorical", columns=[name], classes=list(classes))


def test_the_imported_weights_are_the_start_only_of_an_imported_run_without_a_checkpoint(tmp_path: Path) -> None:
    config = RunConfig()
    config.train.resume = True
    assert imported_start(tmp_path, config) is None  # a run of audiotune's own: its last checkpoint
    (tmp_path / IMPORT_RECORD_FILE).write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weights to continue from"):
        imported_start(tmp_path, config)
    (tmp_path / MODEL_FILE).write_bytes(b"")
    (tmp_path / ENCODER_DIR).mkdir()
    assert imported_start(tmp_path, config) == tmp_path / MODEL_FILE
    assert config.model.checkpoint == str(tmp_path / ENCODER_DIR)  # the architecture, offline
    (tmp_path / CHECKPOINT_DIR).mkdir()
    (tmp_path / CHECKPOINT_DIR / LAST_CHECKPOINT).write_bytes(b"")
    assert imported_start(tmp_path, config) is None  # trained here since: Lightning's own resume
    config.train.resume = False
    assert imported_start(tmp_path, config) is None


def test_the_seed_class_order_is_mapped_onto_the_data_order_and_other_heads_are_refused(tmp_path: Path) -> None:
    state = {"classifiers.0.head.outproj.weight": torch.arange(6.0).reshape(3, 2),
             "classifiers.0.head.outproj.bias": torch.tensor([10.0, 11.0, 12.0]), "other": torch.ones(1)}
    mapped = in_class_order(state, [_head("sad", "anger", "happy")], [_head("anger", "happy", "sad")], tmp_path)
    assert mapped["classifiers.0.head.outproj.bias"].tolist() == [11.0, 12.0, 10.0]
    assert mapped["classifiers.0.head.outproj.weight"].tolist() == [[2.0, 3.0], [4.0, 5.0], [0.0, 1.0]]
    assert torch.equal(state["classifiers.0.head.outproj.bias"], torch.tensor([10.0, 11.0, 12.0]))  # not in place
    with pytest.raises(ValueError, match=r"needs its heads \(label \(categorical: sad anger happy\)\).*-c "):
        in_class_order(state, [_head("sad", "anger", "happy")], [_head("sad", "anger")], tmp_path)
    # the new run starts from the encoder as its backbone's -c reads it: a weights file, or a Hugging Face folder
    new_run = rf"--config {tmp_path / 'config.yaml'} -c {tmp_path / ENCODER_DIR / MODEL_FILE} -o NEW_RUN"
    with pytest.raises(ValueError, match=new_run):
        in_class_order(state, [_head("sad", "anger", "happy")], [_head("sad", "anger")], tmp_path)
    (tmp_path / ENCODER_DIR).mkdir()
    (tmp_path / ENCODER_DIR / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=rf"-c {tmp_path / ENCODER_DIR} -o NEW_RUN"):
        in_class_order(state, [_head("sad", "anger", "happy")], [_head("sad", "anger")], tmp_path)
    with pytest.raises(ValueError, match="emotion"):
        in_class_order(state, [_head("a", "b", "c")], [_head("a", "b", "c", name="emotion")], tmp_path)
