"""Options a config written before they were refused holds (they did nothing): read at their defaults for a new run
(:func:`audiotune.models.option_checks.idle_at_defaults`), kept by a resumed one."""
from __future__ import annotations

from pathlib import Path

import pytest

from audiotune.config import RunConfig
from audiotune.engine.resume import refuse_inactive_of_runs
from audiotune.models.option_checks import idle_at_defaults


def earlier_hf_config(checkpoint: Path) -> RunConfig:
    """A fine-tuning config as an earlier release took it: a rate the encoder reads past, --layer beside --weighted,
    time-span options without --mask_time_prob."""
    config = RunConfig()
    config.model.model, config.model.checkpoint, config.model.freeze = "hf", str(checkpoint), False
    config.audio.resample_rate = 8000
    config.classifier.weighted, config.classifier.layer = True, 1
    config.model.options = {"mask_spans": "batch", "mask_time_length": 5}
    return config


def test_options_that_did_nothing_are_read_at_their_defaults_but_those_given_as_flags(
        hf_checkpoints: dict[str, Path]) -> None:
    config = earlier_hf_config(hf_checkpoints["w2v_layer"])
    shown = idle_at_defaults(config, given=frozenset({"options.mask_spans"}))
    assert [entry.partition(":")[0] for entry in shown] == ["--resample_rate 8000", "--layer 1", "--mask_time_length 5"]
    assert shown[0] == "--resample_rate 8000: does nothing with --model hf"
    assert shown[1].startswith("--layer 1: acts only with --weighted false")
    assert (config.audio.resample_rate, config.classifier.layer, config.classifier.weighted) == (16000, -1, True)
    assert config.model.options["mask_spans"] == "batch"  # the flag's: refused as it is
    assert idle_at_defaults(config, given=frozenset({"options.mask_spans"})) == []  # nothing left


def test_a_folder_made_with_them_goes_on_and_a_new_one_is_refused(hf_checkpoints: dict[str, Path]) -> None:
    config = earlier_hf_config(hf_checkpoints["w2v_layer"])
    refuse_inactive_of_runs(config, made=True)
    with pytest.raises(ValueError, match="--resample_rate 8000: --model hf reads audio at 16000 Hz"):
        refuse_inactive_of_runs(config, made=False)


def test_resume_without_a_last_checkpoint_says_why_there_is_none(tmp_path: Path) -> None:
    """A run stopped before its first checkpoint is started again with --overwrite; a probe folder has no run to go
    on with; a folder holding neither only needs the checkpoint."""
    from audiotune.engine.resume import checkpoint_to_resume
    from audiotune.outputs import CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT, PROBE_SUMMARY_FILE

    with pytest.raises(FileNotFoundError, match=r"earlier run in --exp_dir$"):
        checkpoint_to_resume(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{}")
    with pytest.raises(FileNotFoundError, match="stopped before writing one: start it again with --overwrite"):
        checkpoint_to_resume(tmp_path)
    (tmp_path / PROBE_SUMMARY_FILE).write_text("{}")
    with pytest.raises(FileNotFoundError, match="it is a probe folder"):
        checkpoint_to_resume(tmp_path)
    (tmp_path / CHECKPOINT_DIR).mkdir()
    (tmp_path / CHECKPOINT_DIR / LAST_CHECKPOINT).write_bytes(b"")
    assert checkpoint_to_resume(tmp_path) == tmp_path / CHECKPOINT_DIR / LAST_CHECKPOINT
