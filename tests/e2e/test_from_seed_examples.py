"""Every walk-through in examples/from_seed/ runs as a user types it, from a folder outside the repository, and
leaves the outputs its seed's users expect."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "examples" / "from_seed").glob("*.sh"))
SEEDS = ("naip_w2v2", "naip_ssast", "naip_ecapa", "ser_w2v2", "tap2key")


def embeddings(path: Path, rows: int) -> None:
    frame = pd.read_parquet(path)
    assert len(frame) == rows and len(frame["embedding"].iloc[0]) > 0


def check_clinical(out: Path) -> None:
    """A trained run, its evaluation on the test split (one AUC per label) and one embedding per test clip."""
    assert (out / "exp" / "model.safetensors").is_file() and (out / "exp" / "config.yaml").is_file()
    scored = json.loads((out / "exp_eval" / "metrics.json").read_text())["data"]
    assert set(scored["auc"]) == {"distorted Cs", "distorted V"}
    embeddings(out / "embeddings.parquet", scored["n"])


def check_naip_ssast(out: Path) -> None:
    assert json.loads((out / "pretrain" / "metrics.json").read_text())["task"] == "pretrain_joint"
    assert (out / "pretrain" / "ssast_original.pth").is_file()
    check_clinical(out)


def check_ser_w2v2(out: Path) -> None:
    """Three cross-validations (V-FT, TAPT, P-TAPT encoders) over the three session folds, no validation; every
    fold of TAPT and P-TAPT fine-tunes the encoder pretrained on its own Train part."""
    for k in (1, 2, 3):
        for encoder in ("tapt", "ptapt"):
            assert (out / f"{encoder}_fold_{k}" / "encoder" / "config.json").is_file()
            config = yaml.safe_load((out / f"{encoder}_ft" / f"fold_{k}" / "run_1" / "config.yaml").read_text())
            assert Path(config["model"]["checkpoint"]).parts[-2:] == (f"{encoder}_fold_{k}", "encoder")
        assert pd.read_parquet(out / f"labels_fold_{k}.parquet")["k"].nunique() == 2
    for run in ("vft", "tapt_ft", "ptapt_ft"):
        summary = json.loads((out / run / "cv_summary.json").read_text())
        assert summary["folds"] == 3 and summary["runs"] == 3
        assert 0.0 <= summary["statistics"]["test"]["uar"]["mean"] <= 1.0


def check_tap2key(out: Path) -> None:
    """Taps found and labelled, a run trained on 8 interleaved channels, a confusion matrix of the test taps."""
    segments = pd.read_csv(out / "taps" / "segments.csv")
    assert len(segments) > 100 and segments["label"].nunique() > 20
    config = (out / "tap2key" / "config.yaml").read_text()
    assert "channel_mode: interleave" in config
    assert json.loads((out / "tap2key_eval" / "metrics.json").read_text())["data"]["n"] > 0
    assert list((out / "tap2key_eval" / "plots").glob("confusion_*.png"))


CHECKS = {"naip_w2v2": check_clinical, "naip_ecapa": check_clinical, "naip_ssast": check_naip_ssast,
          "ser_w2v2": check_ser_w2v2, "tap2key": check_tap2key}


def test_there_is_one_walk_through_per_seed() -> None:
    assert sorted(script.stem for script in SCRIPTS) == sorted(SEEDS)


@pytest.fixture()
def path_with_audiotune(tmp_path: Path) -> dict[str, str]:
    """An environment whose `audiotune` and `python` are this interpreter with this checkout's package."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("audiotune", f'"{sys.executable}" -m audiotune'), ("python", f'"{sys.executable}"')):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        (bin_dir / name).chmod(0o755)
    source = str(REPO / "src")
    pythonpath = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": pythonpath,
            "OMP_NUM_THREADS": "1", "AUDIOTUNE_CACHE": str(tmp_path / "cache")}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda script: script.stem)
def test_walk_through_runs_and_leaves_its_outputs(script: Path, tmp_path: Path,
                                                  path_with_audiotune: dict[str, str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(["bash", str(script), "out"], cwd=work, env=path_with_audiotune, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    last_line = done.stdout.strip().splitlines()[-1]
    assert last_line.startswith(f"{script.stem}: "), last_line
    CHECKS[script.stem](work / "out")
