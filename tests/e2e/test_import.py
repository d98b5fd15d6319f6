"""`audiotune import naip`: runs of the clinical-speech seeds, re-created as the seeds saved them, become audiotune
runs whose evaluation gives the seed model's own predictions."""
from __future__ import annotations

import argparse
import inspect
import json
import pickle
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import HF_TINY, make_uid_dataset, save_hf_checkpoint, tone
from torch import Tensor, nn

from audiotune.cli import main
from audiotune.config import load_config
from audiotune.data.loading import collator, make_dataset
from audiotune.data.prepare import prepare_eval_data
from audiotune.models import backbones

LABELS = [["loud", "long"], ["high"]]  # two heads: one with two outputs, one with one


class SeedHead(nn.Module):
    """The seeds' ClassificationHead: dense → [norm] → relu → dropout → outproj, under ``head``."""

    def __init__(self, size: int, bottleneck: int, outputs: int, layernorm: bool = False):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict(dense=nn.Linear(size, bottleneck))
        if layernorm:
            layers["norm"] = nn.LayerNorm(bottleneck)
        layers.update(relu=nn.ReLU(), dropout=nn.Dropout(0.3), outproj=nn.Linear(bottleneck, outputs))
        self.head = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class SeedWrapper(nn.Module):
    """What the three NAIP wrappers share: optional shared dense (dense + relu), one head per label group,
    outputs column-stacked; ``heads`` is the attribute name (``classifiers``, ssast: ``mlp_heads``)."""

    def __init__(self, dim: int, shared_dense: bool, bottleneck: int, heads: str = "classifiers",
                 layernorm: bool = False):
        super().__init__()
        sd = 24
        self.dense = nn.Sequential(OrderedDict(dense=nn.Linear(dim, sd), relu=nn.ReLU())) if shared_dense \
            else nn.Identity()
        setattr(self, heads, nn.ModuleList(SeedHead(sd if shared_dense else dim, bottleneck, len(group), layernorm)
                                           for group in LABELS))
        self.heads_name = heads

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        shared = self.dense(pooled)
        return torch.column_stack([head(shared) for head in getattr(self, self.heads_name)])


class SeedEcapa(SeedWrapper):
    """naip-ecapa-tdnn's ECAPA_TDNNForSpeechClassification: speechbrain's ECAPA_TDNN as ``model`` (audiotune's
    plain-torch copy has its parameter names)."""

    def __init__(self, n_mels: int, shared_dense: bool):
        from audiotune.models.backbones.ecapa_model import ECAPA_TDNN

        super().__init__(192, shared_dense, 32)
        self.model = ECAPA_TDNN(n_mels, lin_neurons=192)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # (B, 1, F, T) as the seed's loader gave it
        return self.classify(self.model(spec.squeeze(1).transpose(1, 2)).squeeze(1))


class SeedW2V2(SeedWrapper):
    """naip-w2v2's Wav2Vec2ForSpeechClassification: AutoModelForAudioClassification as ``model``, hidden states
    pooled over every frame, a raw (no softmax) weighted sum ``weightsum`` of the pooled states when weighted."""

    def __init__(self, checkpoint: Path, weighted: bool, shared_dense: bool, layer: int = -1, pooling: str = "mean"):
        from transformers import AutoConfig, AutoModelForAudioClassification

        config = AutoConfig.from_pretrained(checkpoint, output_hidden_states=True)
        model = AutoModelForAudioClassification.from_pretrained(checkpoint, config=config)
        super().__init__(config.hidden_size, shared_dense, 32)
        self.model, self.weighted, self.layer, self.pooling = model, weighted, layer, pooling
        if weighted:  # as trained: one below zero, not summing to 1
            self.weightsum = nn.Parameter(torch.tensor([0.7, -0.2, 1.4]))

    def pool(self, state: torch.Tensor) -> torch.Tensor:
        return state.amax(-2) if self.pooling == "max" else state.mean(-2)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        states = self.model(waveform).hidden_states
        if self.weighted:
            pooled = self.pool(torch.stack(states))  # (S, B, D)
            return self.classify(torch.einsum("s,sbd->bd", self.weightsum, pooled))
        return self.classify(self.pool(states[self.layer]))

    def seed_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict under transformers 4.28 (the seed's pin): weight norm as weight_g / weight_v."""
        state = self.state_dict()
        for new, old in ((".parametrizations.weight.original0", ".weight_g"),
                         (".parametrizations.weight.original1", ".weight_v")):
            state = {k.replace(new, old): v for k, v in state.items()}
        return state


class SeedSSAST(SeedWrapper):
    """naip-ssast's ASTModel_finetune: the DeiT ``v`` (timm names), 14 hidden states, ft_cls / ft_avgtok merge."""

    def __init__(self, mels: int, frames: int, task: str, layer: int, weighted: bool = False):
        from audiotune.models.backbones.ssast_model import SSASTModel

        v = SSASTModel("tiny", 128, 2, fstride=128, tstride=2, input_fdim=mels, input_tdim=frames, depth=12).v
        super().__init__(v.cls_token.shape[-1], False, 32, heads="mlp_heads", layernorm=True)
        self.v, self.task, self.layer, self.weighted = v, task, layer, weighted
        if weighted:  # one raw weight per state but the last (the normed output)
            self.weightsum = nn.Parameter(torch.rand(len(v.blocks) + 1) + 0.1)

    def merge(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, :2].mean(1) if self.task == "ft_cls" else state[:, 2:].mean(1)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:  # (B, T, F)
        x = self.v.patch_embed(fbank.unsqueeze(1).transpose(2, 3))
        tokens = [self.v.cls_token.expand(len(x), -1, -1), self.v.dist_token.expand(len(x), -1, -1)]
        x = self.v.pos_drop(torch.cat([*tokens, x], dim=1) + self.v.pos_embed)
        states = [x]
        for block in self.v.blocks:
            x = block(x, False)[0]
            states.append(x)
        states.append(self.v.norm(x))
        if self.weighted:
            pooled = torch.stack([self.merge(state) for state in states[:-1]])
            return self.classify(torch.einsum("s,sbd->bd", self.weightsum, pooled))
        return self.classify(self.merge(states[self.layer]))


def seed_args(ds: dict, exp: Path, **values: object) -> argparse.Namespace:
    """The Namespace run.py pickled: its parser's defaults, the run's flags and the label fields it derived."""
    common = dict(prefix=str(ds["prefix"]), study=None, data_split_root=str(ds["split"]), label_txt="labels.txt",
                  lib=False, val_size=50, seed=None, bucket_name=None, project_name=None, cloud=False, dataset=None,
                  exp_dir=str(exp), cloud_dir="", mode="train", shared_dense=False, sd_bottleneck=24,
                  embedding_type=None, pooling_mode="mean", resample_rate=16000, reduce=True, clip_length=10.0,
                  tshift=0.0, speed=0.0, gauss=0.0, pshift=0.0, pshiftn=0.0, gain=0.0, stretch=0.0, mixup=0.0,
                  batch_size=8, num_workers=0, learning_rate=3e-4, epochs=1, optim="adamw", weight_decay=1e-4,
                  loss="BCE", scheduler=None, max_lr=0.01, activation="relu", final_dropout=0.3, layernorm=False,
                  clf_bottleneck=32, debug=False,
                  label_groups=LABELS, target_labels=[c for g in LABELS for c in g], n_class=[len(g) for g in LABELS])
    return argparse.Namespace(**{**common, **values})


def save_seed_run(exp: Path, model: nn.Module, args: argparse.Namespace, name: str,
                  state: dict | None = None) -> Path:
    """As the seeds' run.py: args.pkl before training, then torch.save(model.state_dict()) as *_mdl.pt."""
    exp.mkdir(parents=True)
    with open(exp / "args.pkl", "wb") as handle:
        pickle.dump(args, handle)
    path = exp / name
    torch.save(state if state is not None else model.state_dict(), path)
    return path


def five_clips(ds: dict) -> Path:
    table = ds["table"].iloc[[0, 5, 9, 14, 22]].assign(high=lambda t: (t.pitch == "high").astype(int))
    path = ds["root"] / "five.csv"
    table.to_csv(path)
    return path


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frozen encoders fill the feature cache while they are evaluated: the test's own folder, not the user's."""
    monkeypatch.setenv("AUDIOTUNE_CACHE", str(tmp_path / "cache"))


def assert_round_trip(run: Path, seed: nn.Module, table: Path, as_input) -> None:
    """`audiotune evaluate` on the imported run scores each clip as the seed model does on the same input."""
    assert main(["evaluate", "--run", str(run), "-d", str(table), "-o", str(run / "eval"), "-bs", "2"]) == 0
    predictions = pd.read_parquet(run / "eval" / "predictions.parquet").set_index("uid")
    config = load_config(run / "config.yaml")
    # the data layer as evaluate calls it (the model's InputSpec, where backbones declare one)
    spec = (backbones.input_spec(config),) if "inputs" in inspect.signature(prepare_eval_data).parameters else ()
    prepared = prepare_eval_data(config, *spec, str(table))
    split = next(iter(prepared.tables))
    dataset = make_dataset(config, *spec, prepared.tables[split], prepared.targets[split])
    collate = collator(dataset) if spec else collator(config, dataset)  # one clip as the model reads it
    seed.eval()
    names = [f"score:{c}" for group in LABELS for c in group]
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            expected = torch.sigmoid(seed(as_input(collate([item])["inputs"]))).numpy()[0]
            got = predictions.loc[item["uid"], names].to_numpy(dtype=np.float64)
            assert np.abs(got - expected).max() <= 1e-4, (item["uid"], got, expected)
    assert len(dataset) == 5


@pytest.mark.slow  # the seed's full-size ECAPA-TDNN (its channels were not options)
def test_naip_ecapa_run_imported_evaluates_as_the_seed(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    torch.manual_seed(0)
    seed = SeedEcapa(24, shared_dense=True)
    for module in seed.modules():  # trained BatchNorm statistics, so that they matter
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    args = seed_args(ds, tmp_path / "exp", fbank=True, n_mels=24, n_fft=50, n_mfcc=80, lin_neurons=192,
                     shared_dense=True, freqm=0, timem=0, noise=False, dataset_mean=-6.0, dataset_std=3.0,
                     trained_mdl_path=None)
    weights = save_seed_run(tmp_path / "exp", seed, args, "split_3_adamw_epoch1_ecapa_tdnn_fbank_mdl.pt")
    run = tmp_path / "imported"
    assert main(["import", "naip", str(weights), "-o", str(run)]) == 0
    config = load_config(run / "config.yaml")
    assert (config.model.model, config.features.features, config.features.num_mel_bins,
            config.features.target_length, config.audio.channel_mode) == ("ecapa_tdnn", "fbank", 24, 50, "sum")
    assert (config.features.dataset_mean, config.features.dataset_std) == (-6.0, 3.0)
    table = five_clips(ds)
    assert_round_trip(run, seed, table, lambda feats: feats.transpose(1, 2)[:, None])
    assert main(["extract", "--run", str(run), "-d", str(table), "--embedding_type", "st", "--out",
                 str(tmp_path / "st.parquet")]) == 0
    assert np.stack(pd.read_parquet(tmp_path / "st.parquet")["embedding"]).shape == (5, 24)  # the shared dense
    assert main(["export", "--run", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    # the encoder loads as a SpeechBrain-layout checkpoint (-c for a new training run)
    assert main(["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]),
                 "-o", str(tmp_path / "again"), "--model", "ecapa_tdnn", "-c",
                 str(run / "encoder" / "model.safetensors"), "--fbank", "--num_mel_bins", "24", "-e", "0",
                 "-bs", "4"]) == 0


def seed_ecapa_fbank(path: Path, seconds: float, frames: int, mean: float, std: float) -> torch.Tensor:
    """The input the ECAPA seed's fbank mode gave its model (seed-notes 1.4, 1.6, 4.2): the clip cut to
    --clip_length, less its mean, Kaldi fbank (reproduced by audiotune's), zero-padded to its --n_fft frames,
    normalised: (1, 1, F, T)."""
    return seed_ssast_fbank(path, seconds, frames, mean, std, bins=24).T[None, None]


@pytest.mark.slow  # the seed's full-size ECAPA-TDNN
def test_naip_ecapa_fbank_padded_past_the_clip_scores_as_the_seed(tmp_path: Path) -> None:
    """The seed's fbank mode padded 0.5 s (48 frames) to its --n_fft 64 frames and its model read them all: the
    imported run reads the same 64 frames (its padding holds the seed's normalised zeros)."""
    ds = make_uid_dataset(tmp_path)  # clips of 0.6 to 0.75 s
    torch.manual_seed(0)
    mean, std, frames = -6.0, 3.0, 64
    seed = SeedEcapa(24, shared_dense=False)
    for module in seed.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    args = seed_args(ds, tmp_path / "exp", fbank=True, n_mels=24, n_fft=frames, n_mfcc=80, lin_neurons=192,
                     clip_length=0.5, freqm=0, timem=0, noise=False, dataset_mean=mean, dataset_std=std,
                     trained_mdl_path=None)
    weights = save_seed_run(tmp_path / "exp", seed, args, "split_3_adamw_epoch1_ecapa_tdnn_fbank_mdl.pt")
    run = tmp_path / "imported"
    assert main(["import", "naip", str(weights), "-o", str(run)]) == 0
    assert load_config(run / "config.yaml").model.options["read_padding"] is True
    table = five_clips(ds)
    assert_scores_as_the_seed(run, table, seed, lambda uid: seed_ecapa_fbank(ds["prefix"] / uid / "waveform.wav", 0.5,
                                                                             frames, mean, std), 1e-5)


def assert_scores_as_the_seed(run: Path, table: Path, seed: torch.nn.Module, seed_input: Callable[[str], Tensor],
                              tolerance: float = 1e-4) -> None:
    """`evaluate` of the imported ``run`` on ``table`` gives the seed model's sigmoid scores of each clip's input as
    the seed built it (``seed_input(uid)``), within ``tolerance``."""
    assert main(["evaluate", "--run", str(run), "-d", str(table), "-o", str(run / "eval"), "-bs", "2"]) == 0
    predictions = pd.read_parquet(run / "eval" / "predictions.parquet").set_index("uid")
    names = [f"score:{c}" for group in LABELS for c in group]
    seed.eval()
    with torch.no_grad():
        for uid in pd.read_csv(table, index_col=0).index:
            expected = torch.sigmoid(seed(seed_input(uid))).numpy()[0]
            got = predictions.loc[uid, names].to_numpy(dtype=np.float64)
            assert np.abs(got - expected).max() <= tolerance, (uid, got, expected)


def offset_clips(ds: dict) -> None:
    """The dataset's clips rewritten at 16 kHz (nothing resampled) with a DC offset of their own, as a microphone
    can leave it."""
    for k, uid in enumerate(ds["table"].index):
        folder = ds["prefix"] / uid
        wave = tone(200 + 40 * k, 0.6 + 0.01 * k, 16000, seed=k) + 0.05 * (k % 5) - 0.1
        sf.write(folder / "waveform.wav", wave, 16000, subtype="FLOAT")
        (folder / "metadata.json").write_text(json.dumps({"encoding": "WAV", "sample_rate_hz": 16000}))


def seed_mfcc(path: Path, seconds: float, n_mfcc: int, n_mels: int, n_fft: int) -> torch.Tensor:
    """The input the ECAPA seed's MFCC mode gave its model (seed-notes 1.4, 4.2): the clip cut to --clip_length,
    less its mean (its Mixup stage without a second clip), torchaudio's MFCC (reproduced by audiotune's), nothing
    else: (1, 1, F, T)."""
    from audiotune.data.features import mfcc

    wave, rate = sf.read(path, dtype="float32")
    clip = torch.from_numpy(wave[: int(seconds * rate)])
    return mfcc(clip - clip.mean(), rate, n_mfcc=n_mfcc, n_fft=n_fft, n_mels=n_mels).T[None, None]


@pytest.mark.slow  # the seed's full-size ECAPA-TDNN
def test_naip_ecapa_mfcc_run_imported_scores_as_the_seed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Its default MFCC mode ignored --dataset_mean/--dataset_std and --freqm (fbank only), and every clip was
    centred: the imported run reads the MFCCs of the centred clips, unnormalised."""
    ds = make_uid_dataset(tmp_path)
    offset_clips(ds)
    torch.manual_seed(0)
    seed = SeedEcapa(24, shared_dense=False)
    for module in seed.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    args = seed_args(ds, tmp_path / "exp", fbank=False, n_mfcc=24, n_mels=64, n_fft=400, lin_neurons=192,
                     clip_length=0.5, freqm=5, timem=0, noise=False, dataset_mean=-4.2677393, dataset_std=4.5689974,
                     trained_mdl_path=None)
    weights = save_seed_run(tmp_path / "exp", seed, args, "split_3_adamw_epoch1_ecapa_tdnn_mdl.pt")
    run = tmp_path / "imported"
    assert main(["import", "naip", str(weights), "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert "--dataset_mean -4.2677393: fbank only in the ECAPA seed" in out and "--freqm 5:" in out
    config = load_config(run / "config.yaml")
    assert (config.features.features, config.features.dataset_mean, config.features.dataset_std,
            config.audio.remove_dc) == ("mfcc", None, None, True)
    table = five_clips(ds)
    assert_scores_as_the_seed(run, table, seed, lambda uid: seed_mfcc(ds["prefix"] / uid / "waveform.wav", 0.5, 24,
                                                                      64, 400))


def dataset_and_tiny_wav2vec2(tmp_path: Path) -> tuple[dict, Path]:
    """The generated uid dataset and a tiny wav2vec2 saved as a local checkpoint (seeded)."""
    transformers = pytest.importorskip("transformers")
    ds = make_uid_dataset(tmp_path)
    torch.manual_seed(0)
    return ds, save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)),
                                  tmp_path / "wav2vec2-tiny")


@pytest.mark.slow
def test_naip_w2v2_weighted_run_imported_evaluates_as_the_seed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds, encoder = dataset_and_tiny_wav2vec2(tmp_path)
    seed = SeedW2V2(encoder, weighted=True, shared_dense=True, pooling="max")
    args = seed_args(ds, tmp_path / "exp", checkpoint=str(encoder), finetuned_mdl_path="", mode="finetune",
                     weighted=True, layer=-1, freeze=True, shared_dense=True, seed=4200, debug=True,
                     hp_tuning=False, new_checkpoint=False, pooling_mode="max")
    weights = save_seed_run(tmp_path / "exp", seed, args, "split_3_adamw_epoch1_tiny_clf2_sdweighted_mdl.pt",
                            seed.seed_state_dict())
    run = tmp_path / "imported"
    assert main(["import", "naip", str(weights), "-o", str(run)]) == 0
    assert main(["import", "naip", str(weights), "-o", str(run)]) == 2
    assert f"{run}: already holds a run; pass --overwrite" in capsys.readouterr().err
    assert_round_trip(run, seed, five_clips(ds), lambda wave: wave)
    record = pd.read_json(run / "import.json", typ="series")
    assert "model.projector.weight" in record["dropped"]
    # raw weights below zero with max pooling: weighed as the seed weighed them
    assert record["layer_weights"] == {"seed": pytest.approx([0.7, -0.2, 1.4]), "layer_weights": "raw"}
    # the fine-tuned encoder is a save_pretrained folder that -c reads like a hub id
    assert main(["train", "--model", "hf", "-c", str(run / "encoder"), "-i", str(ds["prefix"]), "-d",
                 str(ds["split"]), "-l", str(ds["labels"]), "-o", str(tmp_path / "again"), "-e", "0", "-bs", "4",
                 "--clf_bottleneck", "8"]) == 0


def labelled_as_the_seeds(ds: dict) -> tuple[Path, Path]:
    """The dataset's split CSVs with the seed heads' columns (``high`` from ``pitch``) and a label file of LABELS."""
    split = ds["root"] / "split_seed_heads"
    split.mkdir()
    for table in Path(ds["split"]).glob("*.csv"):
        frame = pd.read_csv(table)
        frame.assign(high=(frame.pitch == "high").astype(int)).to_csv(split / table.name, index=False)
    labels = ds["root"] / "seed_labels.txt"
    labels.write_text("".join(",".join(group) + "\n" for group in LABELS))
    return split, labels


@pytest.mark.slow
def test_an_imported_w2v2_run_trains_on_as_the_seed_trained(tmp_path: Path) -> None:
    """The seed's frozen wav2vec2 ran in training mode with its checkpoint's SpecAugment and LayerDrop and kept its
    last epoch (seeds/naip_w2v2): the imported run says so, and `train --resume` continues it so."""
    from safetensors.torch import load_file

    ds, encoder = dataset_and_tiny_wav2vec2(tmp_path)
    seed = SeedW2V2(encoder, weighted=False, shared_dense=False)
    args = seed_args(ds, tmp_path / "exp", checkpoint=str(encoder), weighted=False, layer=-1, freeze=True,
                     clip_length=1.0)  # the tiny encoder reads 1,600 frames a second: 10 s padded clips are large
    weights = save_seed_run(tmp_path / "exp", seed, args, "x_mdl.pt", seed.seed_state_dict())
    run = tmp_path / "imported"
    assert main(["import", "naip", str(weights), "-o", str(run)]) == 0

    def meaning(config):
        return (config.model.freeze, config.model.frozen_train_mode, config.train.keep,
                *(config.model.options[name] for name in ("mask_time_prob", "mask_time_length", "layerdrop")))

    trained_as = (True, True, "last", 0.05, 10, "checkpoint")
    assert meaning(load_config(run / "config.yaml")) == trained_as
    # with masks on, the mask embedding is the seed's (it trained with it)
    assert torch.equal(load_file(str(run / "model.safetensors"))["backbone.model.masked_spec_embed"],
                       seed.model.wav2vec2.masked_spec_embed.detach())
    split, labels = labelled_as_the_seeds(ds)
    assert main(["train", "--resume", "--config", str(run / "config.yaml"), "-o", str(run), "-d", str(split),
                 "-l", str(labels), "-e", "2", "-bs", "4"]) == 0
    assert meaning(load_config(run / "config.yaml")) == trained_as


@pytest.mark.slow
@pytest.mark.parametrize(("task", "weighted"), [("ft_avgtok", False), ("ft_cls", True)])
def test_naip_ssast_run_imported_evaluates_as_the_seed(tmp_path: Path, task: str, weighted: bool) -> None:
    ds = make_uid_dataset(tmp_path)
    torch.manual_seed(0)
    seed = SeedSSAST(128, 50, task, layer=5, weighted=weighted)
    args = seed_args(ds, tmp_path / "exp", task=task, model_size="tiny", fshape=128, tshape=2, fstride=128,
                     tstride=2, num_mel_bins=128, target_length=50, layer=5, weighted=weighted, freeze=True,
                     layernorm=True, pooling_mode="sum", dataset_mean=-4.2677393, dataset_std=4.5689974,
                     freqm=0, timem=0, noise=False, mask_patch=400, cluster_factor=3, finetuned_mdl_path=None,
                     pretrained_mdl_path="SSAST-Base-Frame-400.pth", scheduler="onecycle")
    weights = save_seed_run(tmp_path / "exp", seed, args, "split_tiny_3_adamw_epoch1_ast_ft_clf2_layer5_mdl.pt")
    run = tmp_path / "imported"
    assert main(["import", "naip", str(weights), "-o", str(run)]) == 0
    assert load_config(run / "config.yaml").classifier.pooling_mode == "mean"
    assert_round_trip(run, seed, five_clips(ds), lambda feats: feats)
    assert main(["train", "--model", "ssast", "--pretrained_mdl_path", str(run / "encoder" / "model.safetensors"),
                 "--model_size", "tiny", "--num_mel_bins", "128", "--target_length", "50", "-i", str(ds["prefix"]),
                 "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(tmp_path / "again"), "-e", "0"]) == 0


def seed_ssast_fbank(path: Path, seconds: float, frames: int, mean: float, std: float,
                     bins: int = 128) -> torch.Tensor:
    """The input the SSAST seed gave its model (seed-notes 1.4, 1.6): the clip resampled to 16 kHz, cut or padded to
    --clip_length with its mean (Truncate), less its mean (Mixup), Kaldi fbank (reproduced by audiotune's), zero-padded
    to --target_length frames, normalised: (T, F)."""
    import soxr

    from audiotune.data.features import kaldi_fbank

    wave, rate = sf.read(path, dtype="float32")
    samples = int(seconds * 16000)
    clip = torch.from_numpy(soxr.resample(wave, rate, 16000).astype(np.float32)[:samples])
    clip = torch.cat([clip, clip.mean().repeat(samples - len(clip))])
    fbank = kaldi_fbank(clip - clip.mean(), 16000, num_mel_bins=bins)
    fbank = torch.cat([fbank, fbank.new_zeros(max(frames - len(fbank), 0), bins)])[:frames]
    return (fbank - mean) / (2 * std)


@pytest.mark.slow  # a 12-block SSAST
def test_naip_ssast_clips_shorter_than_clip_length_score_as_the_seed(tmp_path: Path) -> None:
    """The seed padded a short clip to --clip_length with silence, whose fbank frames SSAST read before the fbank's
    own zero padding: the imported run reads the same frames and scores each clip as the seed model."""
    ds = make_uid_dataset(tmp_path)  # clips of 0.6 to 0.75 s
    torch.manual_seed(0)
    mean, std, frames = -4.2677393, 4.5689974, 128
    seed = SeedSSAST(128, frames, "ft_avgtok", layer=-1)
    args = seed_args(ds, tmp_path / "exp", task="ft_avgtok", model_size="tiny", fshape=128, tshape=2, fstride=128,
                     tstride=2, num_mel_bins=128, target_length=frames, layer=-1, weighted=False, freeze=True,
                     layernorm=True, dataset_mean=mean, dataset_std=std, freqm=0, timem=0, noise=False,
                     clip_length=1.0, finetuned_mdl_path=None, pretrained_mdl_path="SSAST-Base-Frame-400.pth")
    weights = save_seed_run(tmp_path / "exp", seed, args, "split_tiny_3_adamw_epoch1_ast_ft_clf2_layerFinal_mdl.pt")
    run = tmp_path / "imported"
    assert main(["import", "naip", str(weights), "-o", str(run)]) == 0
    table = five_clips(ds)
    assert_scores_as_the_seed(run, table, seed, lambda uid: seed_ssast_fbank(ds["prefix"] / uid / "waveform.wav", 1.0,
                                                                             frames, mean, std)[None])


def test_a_pickle_that_runs_code_is_refused_before_it_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    exp = tmp_path / "exp"
    exp.mkdir()
    torch.save({"model.blocks.0.conv.conv.weight": torch.zeros(1)}, exp / "x_mdl.pt")
    with open(exp / "args.pkl", "wb") as handle:
        pickle.dump(argparse.Namespace(label_groups=[["a"]], hook=Payload()), handle)
    assert main(["import", "naip", str(exp / "x_mdl.pt"), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{exp / 'args.pkl'}: refused as seed arguments" in err and "posix.system" in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_w2v2_encoder_out_of_reach_is_named_with_the_flag_that_replaces_it(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    """The seed's -c was a local folder (its default wav2vec2-base-960h); import naip -c names one here."""
    ds, encoder = dataset_and_tiny_wav2vec2(tmp_path)
    seed = SeedW2V2(encoder, weighted=False, shared_dense=False)
    args = seed_args(ds, tmp_path / "exp", checkpoint="wav2vec2-base-960h", weighted=False, layer=-1, freeze=True)
    weights = save_seed_run(tmp_path / "exp", seed, args, "x_mdl.pt", seed.seed_state_dict())
    assert main(["import", "naip", str(weights), "-o", str(tmp_path / "run")]) == 2
    assert "(its encoder --checkpoint wav2vec2-base-960h: pass -c with that hub id or a local copy)" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["import", "naip", str(weights), "-c", str(encoder), "-o", str(tmp_path / "run")]) == 0


@pytest.mark.slow
def test_a_seed_model_in_a_bucket_is_read_with_the_args_beside_it(gcs, tmp_path: Path) -> None:
    """The seeds uploaded their runs with --cloud: gs://.../x_mdl.pt and its args.pkl import as local ones, and
    the run directory may be written to the bucket too."""
    from conftest import BUCKET

    ds, encoder = dataset_and_tiny_wav2vec2(tmp_path)
    seed = SeedW2V2(encoder, weighted=False, shared_dense=False, layer=1)
    args = seed_args(ds, tmp_path / "exp", checkpoint=str(encoder), weighted=False, layer=1, freeze=True)
    weights = save_seed_run(tmp_path / "exp", seed, args, "x_mdl.pt", seed.seed_state_dict())
    for file in (weights, weights.parent / "args.pkl"):
        gcs.fs().put_file(str(file), f"{BUCKET}/cloud_dir/{file.name}")
    url = f"gs://{BUCKET}/cloud_dir/x_mdl.pt"
    assert main(["import", "naip", url, "-o", f"gs://{BUCKET}/runs/imported"]) == 0
    assert gcs.fs().isfile(f"{BUCKET}/runs/imported/model.safetensors")
    local = tmp_path / "imported"
    gcs.fs().get(f"{BUCKET}/runs/imported", str(local), recursive=True)
    assert_round_trip(local, seed, five_clips(ds), lambda wave: wave)


@pytest.mark.slow
def test_an_older_args_pkl_without_the_head_widths_takes_them_from_the_weights(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """An args.pkl of an earlier seed version had no --clf_bottleneck / --sd_bottleneck (its parser lacked them):
    the widths come from the weights they shaped, said in a note, and the run scores as the seed."""
    ds = make_uid_dataset(tmp_path)
    torch.manual_seed(0)
    seed = SeedEcapa(24, shared_dense=True)  # head width 32, shared dense 24: not audiotune's defaults
    args = seed_args(ds, tmp_path / "exp", fbank=True, n_mels=24, n_fft=50, n_mfcc=80, lin_neurons=192,
                     shared_dense=True, freqm=0, timem=0, noise=False, trained_mdl_path=None, debug=True)
    del args.clf_bottleneck, args.sd_bottleneck
    weights = save_seed_run(tmp_path / "exp", seed, args, "split_3_adamw_epoch1_ecapa_tdnn_fbank_mdl.pt")
    run = tmp_path / "imported"
    assert main(["import", "naip", str(weights), "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert "--clf_bottleneck: not in the seed's args.pkl; 32, as its weights are shaped" in out
    assert "--sd_bottleneck: not in the seed's args.pkl; 24" in out
    # how the seed run was started is recorded, not applied; its --debug (8 rows a split) is said
    assert "--debug True: the seed run read the first 8 rows of each split only" in out
    record = json.loads((run / "import.json").read_text())
    assert record["how_the_seed_run_started"] == {"mode": "train", "exp_dir": str(tmp_path / "exp"), "dataset": None,
                                                  "trained_mdl_path": None, "embedding_type": None, "debug": True,
                                                  "lib": False, "cloud": False, "cloud_dir": "",
                                                  "bucket_name": None, "project_name": None}
    assert not load_config(run / "config.yaml").train.debug
    config = load_config(run / "config.yaml")
    assert (config.classifier.clf_bottleneck, config.classifier.sd_bottleneck) == (32, 24)
    assert_round_trip(run, seed, five_clips(ds), lambda feats: feats.transpose(1, 2)[:, None])

    # an args.pkl kept elsewhere than beside the weights is given with --args
    kept = tmp_path / "kept" / "args.pkl"
    kept.parent.mkdir()
    (weights.parent / "args.pkl").rename(kept)
    assert main(["import", "naip", str(weights), "-o", str(tmp_path / "again")]) == 2
    assert "the seed's arguments are needed (pass --args PATH to its args.pkl)" in capsys.readouterr().err
    assert main(["import", "naip", str(weights), "--args", str(kept), "-o", str(tmp_path / "again")]) == 0
    again = load_config(tmp_path / "again" / "config.yaml")
    assert (again.classifier, again.features, again.heads) == (config.classifier, config.features, config.heads)
