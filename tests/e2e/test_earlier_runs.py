"""A run directory written by an earlier release (before the runtime section and before backbones declared their
own options: its config.yaml lists every backbone's options flat and the device options under train) loads,
evaluates and extracts, and scores its test clips as it did when it was trained."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import make_uid_dataset

from audiotune.cli import main
from audiotune.models.backbones import input_spec
from audiotune.models.checkpoint import load_run

EARLIER = Path(__file__).parents[1] / "fixtures" / "earlier_release_run"


def test_a_run_of_an_earlier_release_scores_as_it_did(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(EARLIER, run)
    config, _ = load_run(run)
    assert config.runtime.num_workers == 0 and config.model.options["lin_neurons"] == 16
    # its config.yaml holds the input its backbone resolved then: that is its input as it is
    inputs = input_spec(config)
    assert (inputs.num_mel_bins, inputs.freqm, inputs.timem, inputs.min_samples) == (24, 8, 10, 720)
    ds = make_uid_dataset(tmp_path)  # the same generated clips the run was trained and tested on
    test = ds["table"].loc[pd.read_csv(ds["split"] / "test.csv", dtype={"uid": str})["uid"]].copy()
    test["path"] = [str(ds["prefix"] / uid / "waveform.wav") for uid in test.index]
    table = tmp_path / "test.csv"
    test.to_csv(table, index_label="uid")
    assert main(["evaluate", "--run", str(run), "-d", str(table)]) == 0
    assert main(["extract", "--run", str(run), "-d", str(table)]) == 0
    then = pd.read_parquet(EARLIER / "predictions.parquet").query("split == 'test'").set_index("uid")
    now = pd.read_parquet(run / "evaluate" / "predictions.parquet").set_index("uid").loc[then.index]
    scores = [c for c in then.columns if c.startswith("score:")]
    np.testing.assert_allclose(now[scores].to_numpy(), then[scores].to_numpy(), atol=1e-5)
    assert len(pd.read_parquet(run / "embeddings_ft.parquet")) == len(then)
