"""Pretraining's validation rows: a seeded tenth of the clips, or the --val_share asked for."""
from __future__ import annotations

from pathlib import Path

from audiotune.cli import build_parser, config_from_args
from audiotune.engine.pretrain import _tables
from audiotune.models.backbones import input_spec, resolve_config


def validation_rows(ds: dict, tmp_path: Path, *extra: str) -> tuple[int, list[str]]:
    argv = ["pretrain", "--model", "ecapa_tdnn", "-i", str(ds["prefix"]), "-d", str(ds["split"] / "train.csv"),
            "-o", str(tmp_path / "run"), *extra]
    config = resolve_config(config_from_args(build_parser().parse_args(argv)))
    tables, _ = _tables(config, input_spec(config), tmp_path, writes=False)
    return len(tables["train"]), sorted(tables["val"].index)


def test_val_share_sets_how_many_clips_validate_pretraining(uid_dataset: dict, tmp_path: Path) -> None:
    assert validation_rows(uid_dataset, tmp_path)[0] == 15  # 16 clips: a tenth, at least one
    trained, val = validation_rows(uid_dataset, tmp_path, "--val_share", "0.25")
    assert (trained, len(val)) == (12, 4)
    assert validation_rows(uid_dataset, tmp_path, "--val_share", "0.25")[1] == val  # seeded
    assert validation_rows(uid_dataset, tmp_path, "--val_share", "0.25", "--seed", "7")[1] != val
