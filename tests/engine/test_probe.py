"""The probe's heads train as its options say: clipping, a run length in steps, class-balanced epochs and weight
averaging each change the learned heads (here: the weighted sum's layer weights)."""
from __future__ import annotations

import json

import pytest
from conftest import HF_TINY, make_uid_dataset, save_hf_checkpoint

from audiotune.cli import main
from audiotune.engine.probe_report import read_probe
from audiotune.report.probe_page import render_probe


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory):
    """Runs ``audiotune probe`` of a tiny wav2vec2 (3 hidden states) on the uid dataset with extra flags; returns
    each run's probe.json, with its ``folder``."""
    import torch
    import transformers

    ds = make_uid_dataset(tmp_path_factory.mktemp("probe"))
    torch.manual_seed(0)
    checkpoint = save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)),
                                    ds["root"] / "w2v")
    runs: dict[tuple[str, ...], dict] = {}  # the same flags probe once

    def probe(*extra: str) -> dict:
        if extra not in runs:
            out = ds["root"] / f"probe{len(runs)}"
            assert main(["probe", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o",
                         str(out), "--model", "hf", "-c", str(checkpoint), "-bs", "4", "--report", "False",
                         *extra]) == 0
            runs[extra] = {**json.loads((out / "probe.json").read_text()), "folder": out}
        return runs[extra]
    return probe


@pytest.mark.slow
@pytest.mark.parametrize("option", [["--grad_clip", "0.001"], ["--ema", "0.5"], ["--balance", "oversample"]])
def test_a_training_option_changes_the_probed_heads(probed, option: list[str]) -> None:
    plain = probed("-e", "2")
    changed = probed("-e", "2", *option)
    assert changed["layer_weights"] != plain["layer_weights"]
    assert len(changed["layer_weights"]) == 3 and abs(sum(changed["layer_weights"]) - 1) < 1e-6


@pytest.mark.slow
def test_balanced_epochs_are_summarised(probed) -> None:
    summary = probed("-e", "1", "--balance", "undersample")
    assert summary["balance"]["mode"] == "undersample" and "balance" not in probed("-e", "1")


@pytest.mark.slow
def test_training_steps_stop_every_head_after_that_many_steps(probed) -> None:
    # 16 training clips in batches of 4: 4 steps are one epoch; a constant rate, so stopping is what differs
    one_epoch = probed("-e", "1", "--scheduler", "none")
    four_steps = probed("-e", "5", "--training_steps", "4", "--scheduler", "none")
    five_epochs = probed("-e", "5", "--scheduler", "none")
    assert four_steps["layer_weights"] == one_epoch["layer_weights"] != five_epochs["layer_weights"]


@pytest.mark.slow
def test_max_pooling_probes_every_layer_and_says_why_the_weighted_sum_is_not(probed) -> None:
    maxed, mean = probed("-e", "1", "-pm", "max"), probed("-e", "1")
    assert [row["layer"] for row in maxed["layers"]] == ["0", "1", "2"] and maxed["layer_weights"] is None
    assert "max pooling of a softmax-weighted sum" in maxed["weighted_sum"]
    page = render_probe(read_probe(maxed["folder"]))
    assert "no learned layer weights: the weighted sum was not probed: max pooling of a softmax-weighted sum" in page
    assert mean["layers"][-1]["layer"] == "weighted" and "weighted_sum" not in mean
    # raw weights weigh the max-pooled states the cache holds: the weighted sum is probed, its weights as learned
    raw = probed("-e", "1", "-pm", "max", "--layer_weights", "raw")
    assert raw["layers"][-1]["layer"] == "weighted" and "weighted_sum" not in raw
    assert len(raw["layer_weights"]) == 3 and sum(raw["layer_weights"]) != pytest.approx(1.0, abs=1e-6)


def scored_dataset_and_encoder(tmp_path, labels: str) -> tuple[dict, str]:
    """The test dataset with a regression column ``score`` (values no chance agreement can match), the label file
    ``labels``, and a tiny wav2vec2 saved as a hub id's files."""
    import pandas as pd
    import torch
    import transformers

    ds = make_uid_dataset(tmp_path)
    for split in ("train", "val", "test"):
        table = pd.read_csv(ds["split"] / f"{split}.csv", dtype={"uid": str})
        table["score"] = [0.3 * i + (i % 3) for i in range(len(table))]
        table.to_csv(ds["split"] / f"{split}.csv", index=False)
    ds["labels"].write_text(labels)
    torch.manual_seed(0)
    return ds, str(save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)),
                                      tmp_path / "w2v"))


@pytest.mark.slow
@pytest.mark.parametrize(("row", "flags"), [("1", ["--layer", "1"]), ("weighted", ["--weighted", "True"])])
def test_a_probed_layer_scores_as_a_training_run_on_that_layer_alone(tmp_path, row: str, flags: list[str]) -> None:
    ds, checkpoint = scored_dataset_and_encoder(tmp_path, "pitch\nscore:regression\n")
    # one epoch: the training run keeps it, as the probe scores its heads after their last epoch
    common = ["-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "--model", "hf", "-c",
              str(checkpoint), "-bs", "4", "-e", "1", "-lr", "0.01", "--final_dropout", "0.3", "--seed", "3",
              "--report", "False", "--cache_dir", str(tmp_path / "cache")]
    assert main(["probe", *common, "-o", str(tmp_path / "probe")]) == 0
    assert main(["train", *common, "--freeze", "True", *flags, "-o", str(tmp_path / "run")]) == 0
    probed = next(r for r in json.loads((tmp_path / "probe" / "probe.json").read_text())["layers"] if r["layer"] == row)
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for split in ("val", "test"):
        for key in ("accuracy", "macro_f1", "uar", "ccc", "mae"):
            assert probed[f"{split}_{key}"] == pytest.approx(trained[split][key], abs=1e-6), (split, key)


def test_a_probe_of_regression_heads_alone_scores_them(tmp_path) -> None:
    """No classification head: no classification metrics in the runs' scores, and the probe's table has its
    regression columns (the classification ones empty)."""
    ds, checkpoint = scored_dataset_and_encoder(tmp_path, "score:regression\n")
    assert main(["probe", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "--model", "hf",
                 "-c", str(checkpoint), "-bs", "4", "-e", "1", "--report", "False", "--cache_dir",
                 str(tmp_path / "cache"), "-o", str(tmp_path / "probe")]) == 0
    layers = json.loads((tmp_path / "probe" / "probe.json").read_text())["layers"]
    assert all(row["val_ccc"] is not None and row["val_accuracy"] is None for row in layers)


def test_the_printed_table_shows_a_metric_the_heads_lack_as_a_dash() -> None:
    import pandas as pd

    from audiotune.cli.probe import shown

    table = pd.DataFrame({"layer": [0, 1], "val_uar": [0.5, 0.625], "val_mean_auc": [None, None]})
    lines = shown(table).splitlines()
    assert lines[1].split() == ["0", "0.500", "-"] and lines[2].split() == ["1", "0.625", "-"]
    assert "None" not in shown(table)


def test_a_probe_of_a_pooled_encoder_has_no_weighted_sum_row_as_train_has_no_such_run(tmp_path) -> None:
    """An ECAPA-TDNN has one hidden state, pooled by the model: `train --weighted` refuses it, so the probe has its
    one layer's row and says why there is no weighted sum (it wrote a row no training run could give)."""
    from conftest import SMALL_ECAPA_SIZES

    ds = make_uid_dataset(tmp_path)
    assert main(["probe", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "--model",
                 "ecapa_tdnn", *SMALL_ECAPA_SIZES, "-bs", "4", "-e", "1", "--report", "False", "--cache_dir",
                 str(tmp_path / "cache"), "-o", str(tmp_path / "probe")]) == 0
    probed = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert [row["layer"] for row in probed["layers"]] == ["0"]
    assert "one hidden state" in probed["weighted_sum"] and "nothing to weigh" in probed["weighted_sum"]
