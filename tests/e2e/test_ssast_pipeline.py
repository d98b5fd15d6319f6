"""SSAST through the command line: pretrain without labels, continue, fine-tune from it, evaluate, extract."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from audiotune.cli import main

pytestmark = pytest.mark.slow
# tiny SSAST on 32 mel bins x 64 frames: 16x16 patches give a 2 x 4 grid
SMALL = ["--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape", "16", "--tshape",
         "16", "--fstride", "16", "--tstride", "16", "-bs", "4", "--seed", "2"]


def data_args(ds: dict, out) -> list[str]:
    return ["-i", str(ds["prefix"]), "-d", str(ds["split"]), "-o", str(out)]


def test_pretrain_continue_and_fine_tune(uid_dataset: dict, tmp_path) -> None:
    pre = tmp_path / "pre"
    assert main(["pretrain", *data_args(uid_dataset, pre), *SMALL, "--mask_patch", "3", "--cluster_factor", "2",
                 "-e", "2", "-lr", "1e-3"]) == 0
    metrics = json.loads((pre / "metrics.json").read_text())
    assert metrics["task"] == "pretrain_joint" and metrics["epochs_run"] == 2
    assert len(metrics["history"]["val_acc"]) == 2 and len(metrics["history"]["val_mse"]) == 2
    for name in ("model.safetensors", "ssast_original.pth", "plots/masked_accuracy.png", "checkpoints/last.ckpt"):
        assert (pre / name).is_file(), name
    assert torch.load(pre / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    original = torch.load(pre / "ssast_original.pth", map_location="cpu", weights_only=True)
    assert "module.v.pos_embed" in original and "module.p_input_tdim" in original
    ours = load_file(str(pre / "model.safetensors"))
    torch.testing.assert_close(original["module.v.blocks.0.attn.qkv.weight"], ours["v.blocks.0.attn.qkv.weight"])

    # continued pretraining from the original-layout file (the seed could not)
    more = tmp_path / "more"
    assert main(["pretrain", *data_args(uid_dataset, more), *SMALL, "--mask_patch", "3", "-e", "1", "-lr", "0",
                 "--task", "pretrain_mpc", "--pretrained_mdl_path", str(pre / "ssast_original.pth")]) == 0
    continued = load_file(str(more / "model.safetensors"))
    torch.testing.assert_close(continued["v.blocks.0.attn.qkv.weight"], ours["v.blocks.0.attn.qkv.weight"])

    # fine-tune with another time stride and length; labels only now
    run = tmp_path / "ft"
    assert main(["train", *data_args(uid_dataset, run), "-l", str(uid_dataset["labels"]), "--model", "ssast",
                 *SMALL[:-8], "--target_length", "48", "--fshape", "16", "--tshape", "16", "--fstride", "16",
                 "--tstride", "8", "--task", "ft_avgtok", "--pretrained_mdl_path", str(pre / "model.safetensors"),
                 "--freeze", "False", "-e", "2", "--clf_bottleneck", "8"]) == 0
    trained = load_file(str(run / "model.safetensors"))
    assert trained["backbone.model.v.pos_embed"].shape[1] == 2 + 2 * 5  # cls + dist, 2 x 5 patches
    result = json.loads((run / "metrics.json").read_text())
    assert result["test"]["n"] == 4
    out = tmp_path / "emb.parquet"
    assert main(["extract", "--run", str(run), "-d", str(uid_dataset["split"] / "test.csv"), "--embedding_type", "pt",
                 "--layer", "3", "--out", str(out)]) == 0
    matrix = np.stack(pd.read_parquet(out)["embedding"].to_numpy())
    assert matrix.shape == (4, 192) and np.isfinite(matrix).all()
    # the file names the tokens its mean pooled: the run's task's (patches), or those --pooling_mode names
    from audiotune.engine.extract import embeddings_meta

    assert {k: embeddings_meta(out)[k] for k in ("frame_pooling", "tokens")} == {"frame_pooling": "mean",
                                                                                 "tokens": "avgtok"}
    assert main(["extract", "--run", str(run), "-d", str(uid_dataset["split"] / "test.csv"), "--embedding_type", "pt",
                 "--layer", "3", "--pooling_mode", "cls", "--out", str(out)]) == 0
    assert embeddings_meta(out)["tokens"] == "cls"


def test_pretrain_rejects_fine_tuning_tasks_and_overlapping_strides(uid_dataset: dict, tmp_path, capsys) -> None:
    assert main(["pretrain", *data_args(uid_dataset, tmp_path / "a"), *SMALL, "--task", "ft_cls"]) == 2
    assert "pretrain" in capsys.readouterr().err
    assert main(["pretrain", *data_args(uid_dataset, tmp_path / "b"), *SMALL, "--tstride", "8"]) == 2
    assert "stride" in capsys.readouterr().err


def test_attention_maps_for_ssast_and_a_speech_encoder(uid_dataset: dict, hf_checkpoints: dict, tmp_path) -> None:
    from audiotune.engine.attention import rollout

    audio = uid_dataset["prefix"] / "ann0" / "waveform.wav"
    ssast = tmp_path / "ssast"
    assert main(["train", *data_args(uid_dataset, ssast), "-l", str(uid_dataset["labels"]), "--model", "ssast",
                 *SMALL, "--freeze", "False", "-e", "1", "--clf_bottleneck", "8"]) == 0
    assert main(["attention", "--run", str(ssast), "--audio", str(audio), "-o", str(tmp_path / "maps")]) == 0
    names = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert names == [f"attention_layer{i:02d}.png" for i in range(1, 13)] + ["attention_rollout.png"]
    hf = tmp_path / "hf"
    assert main(["train", *data_args(uid_dataset, hf), "-l", str(uid_dataset["labels"]), "--model", "hf", "-c",
                 str(hf_checkpoints["w2v_layer"]), "-e", "1", "--cache_dir", str(tmp_path / "cache")]) == 0
    assert main(["attention", "--run", str(hf), "--audio", str(audio)]) == 0
    assert len(list((hf / "attention").glob("*.png"))) == 3  # 2 layers + rollout
    # the speech encoder's maps in the SSAST run's folder replace its set whole: none of its 12 layers is left
    assert main(["attention", "--run", str(hf), "--audio", str(audio), "-o", str(tmp_path / "maps")]) == 0
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == \
        ["attention_layer01.png", "attention_layer02.png", "attention_rollout.png"]
    # with the residual mix M = U/2 + I/2 and U @ U = U: M @ M = 3/4 U + 1/4 I
    uniform = torch.full((4, 4), 0.25)
    torch.testing.assert_close(rollout([uniform, uniform]), 0.75 * uniform + 0.25 * torch.eye(4))
    torch.testing.assert_close(rollout([torch.eye(4)] * 3), torch.eye(4))


def test_a_weighted_run_saved_before_the_final_norm_left_the_sum_loads_and_resumes(uid_dataset: dict,
                                                                                  tmp_path) -> None:
    """--weighted sums the seed's states (all but the final norm). A run saved at config version 3 summed every
    state: it keeps its 14 layer weights when it is read back and when it is resumed."""
    import yaml
    from safetensors.torch import save_file

    from audiotune.models.checkpoint import load_run

    run, test = tmp_path / "w", str(uid_dataset["split"] / "test.csv")
    assert main(["train", *data_args(uid_dataset, run), "-l", str(uid_dataset["labels"]), "--model", "ssast",
                 *SMALL, "--weighted", "True", "-e", "1", "--clf_bottleneck", "8"]) == 0
    assert load_file(str(run / "model.safetensors"))["layer_weights"].shape == (13,)
    assert main(["evaluate", "--run", str(run), "-d", test, "-o", str(tmp_path / "now")]) == 0

    # the same weights as an earlier release wrote them: one more state, with softmax weight 0
    def one_more_state(state: dict) -> dict:
        return {**state, "layer_weights": torch.cat([state["layer_weights"], torch.tensor([-1.0e4])])}

    save_file(one_more_state(load_file(str(run / "model.safetensors"))), str(run / "model.safetensors"))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {key: torch.cat([value, torch.tensor([-1.0e4])]) if key.endswith("layer_weights")
                          else value for key, value in ckpt["state_dict"].items()}
    for moments in ckpt["optimizer_states"][0]["state"].values():  # the optimiser's moments of the layer weights
        moments.update({key: torch.cat([value, torch.zeros(1)]) for key, value in moments.items()
                        if value.shape == (13,)})
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "version": 3}))

    _, model = load_run(run)
    assert model.layer_weights is not None and model.layer_weights.numel() == 14
    assert main(["evaluate", "--run", str(run), "-d", test, "-o", str(tmp_path / "then")]) == 0
    now, then = (pd.read_parquet(tmp_path / name / "predictions.parquet").set_index("uid") for name in ("now", "then"))
    scores = [c for c in now.columns if c.startswith("score:")]
    np.testing.assert_allclose(then.loc[now.index, scores].to_numpy(), now[scores].to_numpy(), atol=1e-6)
    assert main(["train", *data_args(uid_dataset, run), "-l", str(uid_dataset["labels"]), "--model", "ssast",
                 *SMALL, "--weighted", "True", "-e", "2", "--clf_bottleneck", "8", "--resume"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["version"] == 3
    assert load_file(str(run / "model.safetensors"))["layer_weights"].shape == (14,)
