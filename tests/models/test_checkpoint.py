"""Rebuilding a trained classifier from its run directory: what a path that is no run directory is told."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from audiotune.models.checkpoint import resolve_run_dir


def test_a_seed_experiment_folder_is_told_how_to_become_a_run(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    weights = exp / "split_3_adamw_epoch10_ecapa_tdnn_fbank_mdl.pt"
    weights.write_bytes(b"")
    (exp / "args.pkl").write_bytes(b"")
    for given in (weights, exp):  # the seeds' --trained_mdl_path, or its -o folder
        with pytest.raises(FileNotFoundError, match=f"{given}: not a run directory .*`audiotune import naip "
                                                    f"{weights} -o RUN`"):
            resolve_run_dir(given)
    with pytest.raises(FileNotFoundError, match=r"pass the --exp_dir of a training run$"):
        resolve_run_dir(tmp_path / "nothing")


def test_a_run_loads_its_weights_without_drawing_random_ones_first(hf_checkpoints: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every weight of a run comes from its model.safetensors, so rebuilding it draws no random encoder weights
    first (seconds for a wav2vec2-base-sized encoder); the rebuilt model holds exactly the saved weights. A model
    built to train from its config alone still draws them."""
    import torch
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2PreTrainedModel

    from audiotune.config import CONFIG_VERSION, HeadSpec, RunConfig, save_config
    from audiotune.models.backbones import resolve_config
    from audiotune.models.checkpoint import build_classifier, load_run, save_weights
    from audiotune.outputs import CONFIG_FILE, MODEL_FILE

    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", str(hf_checkpoints["w2v_group"])
    config.heads = [HeadSpec("pitch", "binary", ["high"])]
    config = resolve_config(config)
    config.version = CONFIG_VERSION
    torch.manual_seed(1)
    trained = build_classifier(config)
    save_weights(trained, tmp_path / MODEL_FILE)
    save_config(config, tmp_path / CONFIG_FILE)

    drawn: list[str] = []
    original = Wav2Vec2PreTrainedModel._init_weights

    def counted(self, module: torch.nn.Module) -> None:
        drawn.append(type(module).__name__)
        original(self, module)

    monkeypatch.setattr(Wav2Vec2PreTrainedModel, "_init_weights", counted)
    _, loaded = load_run(tmp_path)
    assert drawn == []
    saved = trained.state_dict()
    assert all(torch.equal(tensor, saved[name]) for name, tensor in loaded.state_dict().items())
    build_classifier(config, pretrained=False)
    assert drawn  # the same build outside a load draws its random weights


def test_a_pretraining_run_or_a_probe_folder_read_as_a_classifier_names_what_it_keeps(tmp_path: Path) -> None:
    """evaluate / extract / export --run of a pretraining run point to its encoder (with the flags that read it), of
    a probe folder to training on the layer it chose; not "no trained weights"."""
    import json

    from audiotune.config import RunConfig, save_config
    from audiotune.models.checkpoint import load_run
    from audiotune.outputs import CONFIG_FILE, METRICS_FILE, PROBE_SUMMARY_FILE

    pretrained = tmp_path / "tapt"
    pretrained.mkdir()
    config = RunConfig()
    config.model.model = "hf"
    save_config(config, pretrained / CONFIG_FILE)
    (pretrained / METRICS_FILE).write_text(json.dumps({"objective": "tapt", "outputs": ["encoder"]}))
    with pytest.raises(FileNotFoundError, match=f"a pretraining run \\(tapt\\) keeps an encoder, not a classifier: "
                                                f"fine-tune one from it with `audiotune train --model hf -c "
                                                f"{pretrained / 'encoder'} ...`"):
        load_run(pretrained)
    probe = tmp_path / "probe"
    probe.mkdir()
    save_config(RunConfig(), probe / CONFIG_FILE)
    (probe / PROBE_SUMMARY_FILE).write_text("{}")
    with pytest.raises(FileNotFoundError, match="a probe folder keeps no classifier"):
        load_run(probe)


def test_a_stopped_training_read_as_a_classifier_says_how_to_finish_it(tmp_path: Path) -> None:
    """evaluate / extract of a run whose training was stopped said only "no trained weights"."""
    from audiotune.config import RunConfig, save_config
    from audiotune.config.sections import RESUME_HINT
    from audiotune.models.checkpoint import load_run
    from audiotune.outputs import CHECKPOINT_DIR, COMMAND_FILE, CONFIG_FILE, LAST_CHECKPOINT

    run = tmp_path / "run"
    run.mkdir()
    save_config(RunConfig(), run / CONFIG_FILE)
    with pytest.raises(FileNotFoundError, match=r"no trained weights in this run directory$"):
        load_run(run)  # no record of a command: an incomplete copy, nothing more to say
    (run / COMMAND_FILE).write_text("[]")
    with pytest.raises(FileNotFoundError, match="stopped before its first checkpoint: train it again with --overwrite"):
        load_run(run)
    (run / CHECKPOINT_DIR).mkdir()
    (run / CHECKPOINT_DIR / LAST_CHECKPOINT).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=f"stopped before it finished \\(checkpoints/last.ckpt\\): "
                                                f"{RESUME_HINT}"):
        load_run(run)
    # said to evaluate, extract or export: the command to go on with is the one that trained it, named
    (run / COMMAND_FILE).write_text('[{"command_line": "audiotune train -d split -o run", '
                                    '"argv": ["audiotune", "train", "-d", "split", "-o", "run"]}]')
    advice = f"{RESUME_HINT} (it was: `audiotune train -d split -o run`)"
    with pytest.raises(FileNotFoundError, match=re.escape(advice)):
        load_run(run)
