"""k-means frame labels (``audiotune cluster``) and pseudo-label TAPT (``pretrain --objective ptapt``)."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from conftest import (
    HF_TINY,
    OnDevice,
    make_uid_dataset,
    outputs_on_meta,
    recorded_attention_masks,
    save_hf_checkpoint,
)
from safetensors.torch import load_file

from audiotune.cli import main
from audiotune.config import RunConfig
from audiotune.data.pseudo_labels import METADATA_KEY, SCHEMA, FramesMade, read_pseudo_labels
from audiotune.engine.cluster import ClusterOptions, Reservoir, _assign, _kmeans
from audiotune.models.backbones.hf_ptapt import PseudoLabelPretraining, hop_aligned_crop
from audiotune.outputs import CLIPS_READ_FILE

transformers = pytest.importorskip("transformers")
pytest.importorskip("faiss")

# a tiny layer-norm wav2vec2 (frames every 5 x 2 = 10 samples, 20 samples per frame) with its quantizer
ENCODER = {**HF_TINY, "feat_extract_norm": "layer", "do_stable_layer_norm": True, "num_codevector_groups": 2,
           "num_codevectors_per_group": 8, "codevector_dim": 16, "proj_codevector_dim": 16, "num_negatives": 5,
           "mask_time_prob": 0.2, "mask_time_length": 2, "layerdrop": 0.0}
HOP = 10


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ptapt") / "encoder"
    torch.manual_seed(0)
    return save_hf_checkpoint(transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**ENCODER)), path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_uid_dataset(tmp_path_factory.mktemp("data"))


def frames_of(samples: int) -> int:
    """Frames of the tiny encoder's conv stack (kernels 10, 3; strides 5, 2)."""
    return ((samples - 10) // 5 + 1 - 3) // 2 + 1


def write_labels(path: Path, labels: dict[str, dict[int, np.ndarray]], hop: int = HOP, rate: int = 16000) -> Path:
    meta = FramesMade(encoder="tiny", run=False, model="hf", layer=1, sample_rate=rate, hop_samples=hop,
                      num_clusters=sorted({k for v in labels.values() for k in v})).record()
    rows = [(uid, k, seq.astype(np.int32)) for uid, per_k in labels.items() for k, seq in per_k.items()]
    table = pa.table({"uid": [r[0] for r in rows], "k": [r[1] for r in rows], "labels": [r[2] for r in rows]},
                     schema=SCHEMA.with_metadata({METADATA_KEY: json.dumps(meta).encode()}))
    pq.write_table(table, path)
    return path


def ptapt(checkpoint: Path, labels: Path, layerdrop: float | None = 0.0, **options: float) -> PseudoLabelPretraining:
    config = RunConfig()
    config.audio.resample_rate = 16000
    config.model.model = "hf"
    config.model.options.update(pseudo_labels=str(labels), mask_time_length=3)
    for name, value in options.items():
        if name == "max_seconds":
            config.train.max_seconds = value
        else:
            config.model.options[name] = value
    return PseudoLabelPretraining(str(checkpoint), config, layerdrop=layerdrop)


# ------------------------------------------------------------------ the k-means sample and the assignment


def test_the_reservoir_holds_a_uniform_sample_in_a_fixed_buffer() -> None:
    reservoir = Reservoir(1000, 1, np.random.default_rng(0))
    for start in range(0, 20000, 500):  # offered in order: a buffer filled first and then closed would hold 0..999
        reservoir.offer(np.arange(start, start + 500, dtype=np.float32)[:, None])
    sample = reservoir.sample()[:, 0]
    assert reservoir.seen == 20000 and sample.shape == (1000,) and reservoir.nbytes == 4000
    assert abs(sample.mean() - 10000) < 600 and (sample >= 15000).mean() > 0.2  # every part of the stream
    assert len(np.unique(sample)) == 1000  # each offered row at most once
    small = Reservoir(10, 2, np.random.default_rng(0))
    small.offer(np.ones((4, 2), np.float32))
    assert small.sample().shape == (4, 2)  # fewer rows than slots: all of them


def test_each_frame_goes_to_its_nearest_centroid() -> None:
    rng = np.random.default_rng(0)
    frames, centroids = rng.standard_normal((200, 6)), rng.standard_normal((9, 6))
    expected = ((frames[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    c = torch.tensor(centroids, dtype=torch.float32)
    assert np.array_equal(_assign(torch.tensor(frames, dtype=torch.float32), c, (c * c).sum(1)).numpy(), expected)


def test_frames_encoded_under_bf16_autocast_still_go_to_their_nearest_centroid() -> None:
    """``--precision bf16`` encodes in bfloat16; the distances to the centroids stay float32 (near centroids, as
    k-means fits them, are told apart by less than a bfloat16 product keeps)."""
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(1000, 256, generator=generator) * 3 + 1
    centroids = frames[:50] + 0.1 * torch.randn(50, 256, generator=generator)
    norms = (centroids * centroids).sum(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assigned = _assign(frames, centroids, norms)
    assert torch.equal(assigned, _assign(frames, centroids, norms))


def test_more_kmeans_iterations_fit_the_sample_better() -> None:
    rng = np.random.default_rng(0)
    sample = np.concatenate([rng.normal(c, 1.0, (300, 4)) for c in range(6)]).astype(np.float32)
    _, one = _kmeans(sample, 6, ClusterOptions([6], niter=1))
    _, twenty = _kmeans(sample, 6, ClusterOptions([6], niter=20))
    assert twenty < one


# ------------------------------------------------------------------ frame alignment of crops and labels


def test_a_hop_aligned_crop_sees_the_same_frames_as_the_whole_clip(checkpoint: Path) -> None:
    model = transformers.Wav2Vec2Model.from_pretrained(checkpoint).eval()
    wave = torch.randn(1, 3000)
    crops, lengths, offsets = hop_aligned_crop(wave, torch.tensor([3000]), 800, HOP, np.random.default_rng(3))
    assert lengths.tolist() == [800] and offsets[0] > 0
    with torch.no_grad():
        whole = model.feature_extractor(wave).transpose(1, 2)[0]
        part = model.feature_extractor(crops).transpose(1, 2)[0]
    n = frames_of(800)
    assert part.shape[0] == n and torch.allclose(part, whole[offsets[0]:offsets[0] + n], atol=1e-5)


def test_the_targets_of_a_crop_are_its_frames_labels(checkpoint: Path, tmp_path: Path) -> None:
    full = frames_of(3000)
    labels = write_labels(tmp_path / "l.parquet", {"a": {full + 1: np.arange(full)}, "b": {full + 1: np.arange(full)}})
    model = ptapt(checkpoint, labels, max_seconds=800 / 16000)
    _, _, offsets = hop_aligned_crop(torch.zeros(2, 3000), torch.tensor([3000, 3000]), 800, HOP,
                                     np.random.default_rng(5))
    n = frames_of(800)
    targets = model.frame_targets(["a", "b"], [full, full], offsets, [n, n - 5], n)[full + 1]
    assert targets[0].tolist() == list(range(offsets[0], offsets[0] + n))
    assert targets[1, :n - 5].tolist() == list(range(offsets[1], offsets[1] + n - 5))
    assert (targets[1, n - 5:] == -100).all()  # past the clip's frames: ignored


def test_the_loss_learns_from_masked_frames_and_short_clips_do_not_break_it(checkpoint: Path, tmp_path: Path) -> None:
    full = frames_of(4000)
    rng = np.random.default_rng(0)
    labels = write_labels(tmp_path / "l.parquet", {uid: {4: rng.integers(0, 4, full), 8: rng.integers(0, 8, full)}
                                                   for uid in ("a", "b")} | {"c": {4: np.zeros(1, int),
                                                                                   8: np.zeros(1, int)}})
    model = ptapt(checkpoint, labels)
    waves = torch.randn(2, 4000)
    losses = model.loss(waves, torch.tensor([4000, 4000]), ["a", "b"], random.Random(0))
    assert losses["masked"] > 0 and set(losses) >= {"loss", "acc", "ce_k4", "ce_k8"}
    assert torch.isclose(losses["loss"], losses["ce_k4"] + losses["ce_k8"])
    losses["loss"].backward()
    assert model.heads["8"][0].weight.grad is not None
    assert any(p.grad is not None for p in model.model.encoder.parameters())
    assert all(p.grad is None for p in model.model.feature_extractor.parameters())  # CNN frozen
    assert all(p.grad is None for p in model.model.feature_projection.parameters())  # projection frozen
    assert model.model.masked_spec_embed.grad is None  # the mask embedding kept, as the seed
    nothing = model.loss(waves[:1, :20], torch.tensor([20]), ["c"], random.Random(0))  # 1 frame: no span fits
    assert nothing["masked"] == 0 and nothing["loss"].item() == 0.0 and nothing["loss"].requires_grad


def test_every_value_of_a_ptapt_step_is_on_the_device_of_its_audio(checkpoint: Path, tmp_path: Path) -> None:
    """The step's values are logged with ``sync_dist``: in a multi-GPU run Lightning reduces each where it lies, and
    NCCL reduces no tensor on the CPU (the masked frames' count was made there)."""
    rng = np.random.default_rng(0)
    labels = write_labels(tmp_path / "l.parquet", {uid: {4: rng.integers(0, 4, frames_of(samples))}
                                                   for uid, samples in (("a", 4000), ("b", 3000), ("c", 20))})
    model = ptapt(checkpoint, labels)
    model.model.forward = outputs_on_meta(model.model.forward)  # the encoder stands for one on a GPU
    model.heads.to("meta")
    waves = torch.randn(2, 4000, device="meta")
    for losses in (model.loss(waves, [4000, 3000], ["a", "b"], random.Random(0)),
                   model.loss(waves[:1, :20], [20], ["c"], random.Random(0))):  # 1 frame: no span fits
        assert {name: value.device.type for name, value in losses.items()} == dict.fromkeys(losses, "meta")

def test_ptapt_draws_its_crops_masks_and_targets_from_lengths_on_the_host_and_reads_nothing_back(
        checkpoint: Path, tmp_path: Path) -> None:
    """With the batch's lengths on the host (as the loader gives them), a P-TAPT step queues its work on the device
    without waiting for it: the same losses as from lengths read back, nothing read from the waveforms or anything
    computed from them."""
    rng = np.random.default_rng(0)
    labels = write_labels(tmp_path / "l.parquet", {uid: {4: rng.integers(0, 4, frames_of(samples))}
                                                   for uid, samples in (("a", 4000), ("b", 3000))})
    model = ptapt(checkpoint, labels, max_seconds=0.2)  # crops 4000 samples to 3200
    waves = torch.randn(2, 4000)
    torch.manual_seed(0)
    on_device = model.loss(waves.as_subclass(OnDevice), [4000, 3000], ["a", "b"], random.Random(0))
    torch.manual_seed(0)
    read_back = model.loss(waves, torch.tensor([4000, 3000]), ["a", "b"], random.Random(0))
    assert on_device["masked"] > 0
    for name, value in read_back.items():
        assert torch.equal(value, on_device[name].as_subclass(torch.Tensor)), name


def test_ptapt_skips_layers_with_the_layerdrop_asked(checkpoint: Path, tmp_path: Path) -> None:
    """--layerdrop acts in P-TAPT as in fine-tuning: `checkpoint` takes the checkpoint config's 1.0 here, so no
    layer runs in a training pass and none gets a gradient; 0 (the default) skips none; a probability of its own
    skips with it. transformers' own LayerDrop stays off, and the saved encoder keeps the checkpoint's value."""
    dropping = tmp_path / "dropping"
    shutil.copytree(checkpoint, dropping)
    settings = json.loads((dropping / "config.json").read_text())
    (dropping / "config.json").write_text(json.dumps({**settings, "layerdrop": 1.0}))
    full = frames_of(4000)
    labels = write_labels(tmp_path / "l.parquet", {uid: {4: np.arange(full) % 4} for uid in ("a", "b")})

    def layers_trained(folder: Path, layerdrop: float | None) -> bool:
        model = ptapt(folder, labels, layerdrop=layerdrop).train()
        assert model.model.config.layerdrop == 0.0
        model.loss(torch.randn(2, 4000), torch.tensor([4000, 4000]), ["a", "b"], random.Random(0))["loss"].backward()
        grads = [p.grad is not None for p in model.model.encoder.layers.parameters()]
        assert len(set(grads)) == 1  # every layer skipped, or every layer run
        return grads[0]

    assert not layers_trained(dropping, None) and layers_trained(dropping, 0.0)
    assert not layers_trained(checkpoint, 1.0) and layers_trained(checkpoint, None)  # the checkpoint's 0.0
    model = ptapt(dropping, labels, layerdrop=None)
    assert json.loads((model.save(tmp_path / "out") / "config.json").read_text())["layerdrop"] == 1.0


def test_a_group_norm_encoder_predicts_without_attending_to_the_padding(tmp_path: Path) -> None:
    """As the seed's P-TAPT ran wav2vec2-base: the transformer is given each clip's real frames only."""
    torch.manual_seed(0)
    group = {**ENCODER, "feat_extract_norm": "group", "do_stable_layer_norm": False}
    checkpoint = save_hf_checkpoint(transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**group)),
                                    tmp_path / "group")
    labels = write_labels(tmp_path / "l.parquet", {uid: {4: np.zeros(frames_of(n), int)}
                                                   for uid, n in (("a", 4000), ("b", 1500))})
    model = ptapt(checkpoint, labels)
    seen = {}
    model.model.encoder.register_forward_pre_hook(lambda _, args, kwargs: seen.update(kwargs), with_kwargs=True)
    model.loss(torch.randn(2, 4000), torch.tensor([4000, 1500]), ["a", "b"], random.Random(0))
    real = seen["attention_mask"].bool()
    assert real.sum(1).tolist() == [frames_of(4000), frames_of(1500)]


def test_labels_that_do_not_fit_the_audio_are_errors(checkpoint: Path, tmp_path: Path) -> None:
    full = frames_of(4000)
    good = {"a": {4: np.zeros(full, int)}}
    with pytest.raises(ValueError, match="frames every 20 samples at 16000 Hz.*every 10 samples"):
        ptapt(checkpoint, write_labels(tmp_path / "hop.parquet", good, hop=20))
    model = ptapt(checkpoint, write_labels(tmp_path / "short.parquet", {"a": {4: np.zeros(full - 1, int)}}))
    with pytest.raises(ValueError, match=f"uid a has {full - 1} K=4 labels, but the encoder makes {full} frames"):
        model.loss(torch.randn(1, 4000), torch.tensor([4000]), ["a"], random.Random(0))
    model = ptapt(checkpoint, write_labels(tmp_path / "good.parquet", good))
    with pytest.raises(ValueError, match="no labels for uid z"):
        model.loss(torch.randn(1, 4000), torch.tensor([4000]), ["z"], random.Random(0))
    (tmp_path / "plain.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="cannot be read as parquet"):
        read_pseudo_labels(str(tmp_path / "plain.parquet"))
    pd.DataFrame({"uid": ["a"], "k": [4]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not written by `audiotune cluster`"):
        read_pseudo_labels(str(tmp_path / "other.parquet"))
    table = pq.read_table(write_labels(tmp_path / "partial.parquet", good))
    partial = {k: v for k, v in json.loads(table.schema.metadata[METADATA_KEY]).items() if k != "hop_samples"}
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(partial).encode()}),
                   tmp_path / "partial.parquet")
    with pytest.raises(ValueError, match="partial.parquet: its cluster metadata lacks hop_samples"):
        read_pseudo_labels(str(tmp_path / "partial.parquet"))


# ------------------------------------------------------------------ through the CLI


def cluster_args(ds: dict, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["cluster", "-c", str(checkpoint), "-i", str(ds["prefix"]), "-d", str(ds["split"]), "--out", str(out),
            "--num_clusters", "4", "16", "--sample_ratio", "0.5", "--layer", "1", "-bs", "4", *extra]


@pytest.mark.slow
def test_cluster_labels_every_frame_of_every_clip(checkpoint: Path, dataset: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "labels.parquet"
    assert main(cluster_args(dataset, checkpoint, out, "--max_frames", "3000")) == 0
    assert "K=16: 16 clusters used, 0 empty" in capsys.readouterr().out
    labels = read_pseudo_labels(str(out))
    assert set(labels.labels) == set(dataset["table"].index) and labels.num_clusters == [4, 16]
    for uid, per_k in labels.labels.items():
        wave, rate = sf.read(dataset["prefix"] / uid / "waveform.wav")
        n = frames_of(round(len(wave) * 16000 / rate))  # resampled from 8 kHz
        assert {k: len(v) for k, v in per_k.items()} == {4: n, 16: n}
        assert per_k[16].max() < 16 and per_k[4].max() < 4
    stats = json.loads((tmp_path / "labels.clusters.json").read_text())
    assert stats["layer"] == 1 and stats["hop_samples"] == HOP and stats["sample_frames"] == 3000
    assert stats["buffer_mib"] == round(3000 * 32 * 4 / 2 ** 20, 1) and stats["frames_offered"] > 3000
    assert stats["clusters"]["16"]["frames"] == sum(len(v[16]) for v in labels.labels.values())
    train = pd.read_csv(dataset["split"] / "train.csv")["uid"]  # k-means is fitted on the training clips
    train_frames = sum(len(labels.labels[uid][16]) for uid in train)
    assert 0.45 < stats["frames_offered"] / train_frames < 0.55  # --sample_ratio 0.5
    # a K larger than the sample is refused before anything is written
    assert main(cluster_args(dataset, checkpoint, tmp_path / "big.parquet", "--max_frames", "10")) == 2
    assert "k-means needs at least 16 sampled frames" in capsys.readouterr().err
    assert not (tmp_path / "big.parquet").exists() and not (tmp_path / "big.clusters.json").exists()
    assert main(cluster_args(dataset, checkpoint, tmp_path / "labels.csv")) == 2
    assert "give a path ending in .parquet" in capsys.readouterr().err


@pytest.mark.slow
def test_ptapt_learns_the_clusters_and_its_encoder_fine_tunes(checkpoint: Path, dataset: dict,
                                                              tmp_path: Path) -> None:
    labels = tmp_path / "labels.parquet"
    assert main(cluster_args(dataset, checkpoint, labels)) == 0
    out = tmp_path / "ptapt"
    assert main(["pretrain", "--model", "hf", "-c", str(checkpoint), "--objective", "ptapt", "--pseudo_labels",
                 str(labels), "-i", str(dataset["prefix"]), "-d", str(dataset["split"]), "-o", str(out), "-bs", "4",
                 "-lr", "2e-3", "-e", "4", "--mask_time_length", "3", "--max_seconds", "0.3", "--seed", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["objective"] == "ptapt" and metrics["outputs"] == ["encoder"]
    val = metrics["history"]["val_loss"]
    assert val[-1] < 0.9 * val[0] and metrics["history"]["val_acc"][-1] > metrics["history"]["val_acc"][0]
    saved = load_file(out / "encoder" / "model.safetensors")
    before = load_file(checkpoint / "model.safetensors")
    assert not any(k.startswith(("heads.", "quantizer.")) for k in saved)  # the encoder only
    unchanged = [k for k in saved if k.startswith(("feature_extractor.", "feature_projection.", "masked_spec_embed"))]
    assert "masked_spec_embed" in unchanged and all(torch.equal(saved[k], before["wav2vec2." + k]) for k in unchanged)
    assert any(not torch.equal(saved[k], before["wav2vec2." + k]) for k in saved if k.startswith("encoder.layers"))
    assert json.loads((out / "encoder" / "config.json").read_text())["mask_time_prob"] == 0.2  # the checkpoint's
    run = tmp_path / "run"
    assert main(["train", "--model", "hf", "-c", str(out / "encoder"), "-i", str(dataset["prefix"]), "-d",
                 str(dataset["split"]), "-l", str(dataset["labels"]), "-o", str(run), "-e", "1", "-bs", "4"]) == 0
    assert (run / "model.safetensors").is_file()
    # iterative pseudo-labelling: cluster the fine-tuned run's encoder, pretrain again from the P-TAPT encoder
    relabelled = tmp_path / "again.parquet"
    assert main(["cluster", "--run", str(run), "-i", str(dataset["prefix"]), "-d", str(dataset["split"]),
                 "--out", str(relabelled), "--num_clusters", "8", "-bs", "4"]) == 0
    assert read_pseudo_labels(str(relabelled)).meta["run"] is True
    assert main(["pretrain", "--model", "hf", "-c", str(out / "encoder"), "--objective", "ptapt", "--pseudo_labels",
                 str(relabelled), "-i", str(dataset["prefix"]), "-d", str(dataset["split"]), "-o",
                 str(tmp_path / "again"), "-bs", "4", "--training_steps", "2", "--layerdrop", "0.5"]) == 0
    # what each stage read is recorded: its own clips, the stage-1 run's (clustered into its labels), the clips its
    # labels' k-means was fitted on, and those of the P-TAPT run its encoder comes from (with that run's labels')
    stages = pd.read_csv(tmp_path / "again" / CLIPS_READ_FILE).groupby("run")["stage"].agg(set).to_dict()
    assert stages == {str((tmp_path / "again").resolve()): {"pretrain"}, str(run.resolve()): {"train"},
                      str(out.resolve()): {"pretrain"}, str(relabelled.resolve()): {"cluster"},
                      str(labels.resolve()): {"cluster"}}


def test_ptapt_without_labels_is_an_error_before_any_output(checkpoint: Path, dataset: dict, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ptapt"
    assert main(["pretrain", "--model", "hf", "-c", str(checkpoint), "--objective", "ptapt", "-i",
                 str(dataset["prefix"]), "-d", str(dataset["split"]), "-o", str(out)]) == 2
    assert "--pseudo_labels LABELS.parquet" in capsys.readouterr().err and not out.exists()


def test_ptapt_with_a_clip_its_labels_lack_is_an_error_before_any_step(checkpoint: Path, dataset: dict,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """The labels were clustered from a table without one of the clips pretrained on: named before training
    starts (it was found when its batch came, an epoch or more in), and no run directory is left."""
    import shutil

    fewer = tmp_path / "fewer"
    shutil.copytree(dataset["split"], fewer)
    test = pd.read_csv(fewer / "test.csv", dtype={"uid": str})
    test.iloc[1:].to_csv(fewer / "test.csv", index=False)
    labels = tmp_path / "labels.parquet"
    assert main(cluster_args({**dataset, "split": fewer}, checkpoint, labels)) == 0
    out = tmp_path / "ptapt"
    capsys.readouterr()
    assert main(["pretrain", "--model", "hf", "-c", str(checkpoint), "--objective", "ptapt", "--pseudo_labels",
                 str(labels), "-i", str(dataset["prefix"]), "-d", str(dataset["split"]), "-o", str(out), "-bs", "4",
                 "-e", "1"]) == 2
    error = capsys.readouterr().err
    assert f"1 clip(s) the objective cannot learn from:\n  uid {test['uid'].iloc[0]}: no frame labels in " \
           f"--pseudo_labels {labels}" in error
    assert not out.exists()


def test_a_ptapt_batch_whose_crops_fill_it_runs_without_an_attention_mask(checkpoint: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = write_labels(tmp_path / "l.parquet", {uid: {4: rng.integers(0, 4, frames_of(samples))}
                                                   for uid, samples in (("a", 4000), ("b", 3600), ("c", 3000))})
    model = ptapt(checkpoint, labels, max_seconds=0.2)  # crops 4000 samples to 3200
    masks = recorded_attention_masks(model.model)
    model.loss(torch.randn(2, 4000), [4000, 3600], ["a", "b"], random.Random(0))
    model.loss(torch.randn(2, 4000), [4000, 3000], ["a", "c"], random.Random(0))
    assert masks[0] is None and masks[1] is not None and not bool(masks[1].all())
