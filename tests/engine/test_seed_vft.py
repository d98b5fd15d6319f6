"""The V-FT classifier of the emotion seed: its keys mapped onto the recipe's classifier, its classes checked."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from audiotune.config.sections import RuntimeConfig
from audiotune.engine.seed_import import SeedImportError
from audiotune.engine.seed_vft import _mapped, downstream_state, has_vft_head, import_vft_run, vft_config


def _checkpoint(path: Path, state: dict) -> Path:
    torch.save({"epoch": 14, "state_dict": state}, path)
    return path


def _vft_state(outputs: int = 4) -> dict[str, torch.Tensor]:
    head = nn.Module()
    head.rnn_head = nn.LSTM(32, 8, 1, bidirectional=True)
    head.linear_head = nn.Sequential(nn.ReLU(), nn.Linear(32, outputs))
    vft = nn.Module()
    vft.model = head
    return vft.state_dict()


def test_the_recipe_pools_as_the_seed_and_the_head_names_the_classes() -> None:
    config = vft_config("facebook/wav2vec2-base", ["sad", "anger"])
    assert (config.classifier.frame_activation, config.classifier.pool_drop_last, config.classifier.clf_bottleneck,
            config.classifier.activation, config.model.model) == ("relu", True, 0, "relu", "hf")
    assert [(h.name, h.kind, h.classes) for h in config.heads] == [("label", "categorical", ["sad", "anger"])]
    assert config.runtime.num_workers == RuntimeConfig().num_workers  # the default, not the seed's 4 workers


def test_keys_map_onto_the_classifier_and_the_unused_lstm_is_dropped() -> None:
    state = {**_vft_state(), "model.wav2vec2.wav2vec2.masked_spec_embed": torch.zeros(32), "model.extra": torch.ones(1)}
    own = {"backbone.model.masked_spec_embed": torch.zeros(32), "classifiers.0.head.outproj.weight": torch.zeros(4, 32),
           "classifiers.0.head.outproj.bias": torch.zeros(4)}
    mapped, dropped, unknown = _mapped(state, own)
    assert set(mapped) == set(own) and torch.equal(mapped["classifiers.0.head.outproj.weight"],
                                                   state["model.linear_head.1.weight"])
    assert all(key.startswith("model.rnn_head.") for key in dropped) and unknown == ["model.extra"]
    assert has_vft_head(state) and not has_vft_head({"wav2vec2.wav2vec2.x": torch.zeros(1)})


def test_the_classifier_saved_alone_as_eager_pt_reads_as_the_lightning_checkpoint(tmp_path: Path) -> None:
    """run_downstream_custom.py also saved model.model.state_dict() as eager.pt: the PretrainedRNNHead's keys
    without DownstreamGeneral's ``model.``; --classes reads it as the checkpoint (the class count checked)."""
    state = _vft_state()
    eager = {key.removeprefix("model."): value for key, value in state.items()}
    assert downstream_state(eager).keys() == state.keys() and downstream_state(state).keys() == state.keys()
    torch.save(eager, tmp_path / "eager.pt")
    with pytest.raises(SeedImportError, match=r"its classifier has 4 outputs; --classes names 2 \(a b\)"):
        import_vft_run(tmp_path / "eager.pt", "unused", ["a", "b"], tmp_path / "run")


def test_classes_that_do_not_fit_the_head_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "vft.ckpt", _vft_state())
    with pytest.raises(SeedImportError, match=r"its classifier has 4 outputs; --classes names 2 \(a b\)"):
        import_vft_run(checkpoint, "unused", ["a", "b"], tmp_path / "run")
    with pytest.raises(SeedImportError, match="4 distinct classes"):
        import_vft_run(checkpoint, "unused", ["a", "b", "a", "c"], tmp_path / "run")
    tapt = _checkpoint(tmp_path / "last.ckpt", {"wav2vec2.wav2vec2.x": torch.zeros(1)})
    with pytest.raises(SeedImportError, match="no V-FT classifier"):
        import_vft_run(tapt, "unused", ["a", "b"], tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.usefixtures("no_network")
def test_an_architecture_hub_id_without_a_network_is_one_line_at_once(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "vft.ckpt", _vft_state(2))
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^-c facebook/wav2vec2-base: not a local folder, .* cannot be reached"):
        import_vft_run(checkpoint, "facebook/wav2vec2-base", ["a", "b"], tmp_path / "run")
    assert time.monotonic() - start < 5 and not (tmp_path / "run").exists()
