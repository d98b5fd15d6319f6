"""A pretrained encoder on its own, for embeddings without a trained classifier.

``audiotune extract`` embeds with one of: a bare checkpoint (``-c CHECKPOINT --model NAME``: a Hugging Face folder
or hub id, an SSAST ``.pth``; the seeds' extraction without a fine-tuned model), the encoder an ``audiotune
pretrain`` run wrote, or a trained run's backbone pooled over chosen tokens (SSAST ``cls`` / ``avgtok``: the
seed's ``--task`` at extraction). Each gives ``pt`` embeddings (one hidden state, pooled); an encoder without a
trained classifier also gives ``wt``, the plain average of the hidden states ``--weighted`` sums (the weighted sum at
its start).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from audiotune import storage
from audiotune.config import ClassifierConfig, RunConfig
from audiotune.config.files import parse_config_file
from audiotune.models.backbones import Backbone, SupportsTokenPooling, backbone_class, build_backbone, resolve_config
from audiotune.models.checkpoint import load_run, rebuild_config, resolve_run_dir
from audiotune.models.classifier import FT_MERGES, ft_merge_refusal, masked_pool
from audiotune.models.option_checks import ignored_options
from audiotune.outputs import CONFIG_FILE, METRICS_FILE, PRETRAIN_OUTPUTS

# the frame poolings of the classifier section; a backbone may add token pools (SupportsTokenPooling)
FRAME_POOLS: tuple[str, ...] = next(spec.metadata["choices"] for spec in dataclasses.fields(ClassifierConfig)
                                    if spec.name == "pooling_mode")
ENCODER_EMBEDDINGS = ("pt", "wt")


def check_pooling(backbone: Backbone | type[Backbone], pooling: str) -> None:
    """A ValueError unless ``pooling`` is a frame pooling or one of the backbone's token pools; a pooled backbone
    (:attr:`~Backbone.pooled`) has one pooling, which gives its one vector back. ``backbone``: one built or its
    class (what it declares)."""
    tokens: tuple[str, ...] = getattr(backbone, "token_pools", ())
    if pooling not in (*FRAME_POOLS, *tokens):
        raise ValueError(f"--pooling_mode {pooling}: this backbone pools by {', '.join((*FRAME_POOLS, *tokens))}"
                         + ("" if tokens else " (cls and avgtok are SSAST's token pools)"))
    if backbone.pooled and pooling != FRAME_POOLS[0]:
        raise ValueError(f"--pooling_mode {pooling}: this backbone's hidden state is one vector per clip, pooled by "
                         "the model (ECAPA-TDNN's attentive statistics pooling): every pooling gives it back as it "
                         "is; leave --pooling_mode out")


def check_weighted(backbone: Backbone, kind: str) -> None:
    """A ValueError for ``wt`` embeddings of a backbone with one hidden state to weigh: they would be that state."""
    if kind == "wt" and backbone.weighted_states == 1:
        raise ValueError("--embedding_type wt: this backbone has one hidden state, which its weighted sum gives back "
                         "(or scales); use --embedding_type pt")


class EncoderEmbedder(nn.Module):
    """A backbone without heads: ``extract_embedding`` pools one hidden state (``pt``) or the average of those
    ``--weighted`` sums (``wt``, :attr:`~Backbone.weighted_states`) over the real frames (mean, sum, max) or over
    the tokens of a token pool (their mean)."""

    def __init__(self, backbone: Backbone, layer: int = -1, pooling: str = "mean",
                 kinds: tuple[str, ...] = ENCODER_EMBEDDINGS) -> None:
        super().__init__()
        num_states = backbone.num_hidden_states
        if not -num_states <= layer < num_states:
            raise ValueError(f"--layer {layer}: the backbone has hidden states 0..{num_states - 1}")
        check_pooling(backbone, pooling)
        self.backbone = backbone
        self.layer = layer
        self.pooling = pooling
        self.kinds = kinds

    def check(self, kind: str, pooling: str | None) -> None:
        """A ValueError for an embedding this encoder cannot give (before anything is written)."""
        check_kind(kind, self.kinds)
        check_weighted(self.backbone, kind)
        if pooling is not None:
            check_pooling(self.backbone, pooling)

    @torch.no_grad()
    def extract_embedding(self, inputs: Tensor, lengths: Tensor | None, kind: str = "pt", layer: int | None = None,
                          pooling: str | None = None) -> Tensor:
        """(B, D) embeddings of a batch: hidden state ``layer`` (default: this encoder's) for ``pt``, the mean of
        the summed hidden states for ``wt``, pooled by ``pooling`` (default: this encoder's)."""
        self.check(kind, pooling)
        states, mask = self.backbone.hidden_states(inputs, lengths)
        summed = states[:self.backbone.weighted_states]
        state = torch.stack(list(summed)).mean(0) if kind == "wt" else states[self.layer if layer is None else layer]
        pool = pooling or self.pooling
        if pool in FRAME_POOLS:
            return masked_pool(state, mask, pool)
        assert isinstance(self.backbone, SupportsTokenPooling)  # check_pooling accepted it
        return masked_pool(state, self.backbone.token_mask(pool, state.shape[0], state.device), "mean")


def check_kind(kind: str, kinds: tuple[str, ...]) -> None:
    """A ValueError for an embedding ``kind`` an embedder that gives ``kinds`` cannot give."""
    if kind not in kinds:
        raise ValueError(f"--embedding_type {kind}: without a trained classifier the embeddings are "
                         f"{' or '.join(kinds)}; st and ft need a run of `audiotune train`")


def check_embedding(config: RunConfig, run: str | None, kind: str, pooling: str | None) -> None:
    """What :func:`load_embedder` refuses of ``kind`` and ``pooling`` that the embedder's config
    (:func:`embedder_config`) tells without building its model: a refused request is named before the data is
    read."""
    if run is None or is_encoder_run(run):
        check_kind(kind, ENCODER_EMBEDDINGS)
    if pooling is not None and (run is None or kind != "ft"):  # ft embeddings of a run: pooling merges the heads
        check_pooling(backbone_class(config.model.model), pooling)
    elif pooling in FRAME_POOLS and pooling not in FT_MERGES:  # token pools: load_embedder says what they choose
        raise ValueError(ft_merge_refusal(pooling))


def is_encoder_run(run: str | Path) -> bool:
    """Whether ``run`` (local or gs://) holds an encoder without heads: a run of `audiotune pretrain`."""
    config_path = storage.join(run, CONFIG_FILE)
    if not storage.isfile(config_path):
        return False
    with storage.open_input(config_path) as stream:
        raw = parse_config_file(stream.read(), config_path)
    return not raw.get("heads")


def _pretrained_weights(run_dir: Path) -> Path:
    """What a finished pretrain run wrote for its backbone to load (the first output its metrics.json names)."""
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise FileNotFoundError(f"{run_dir}: a pretrain run without {METRICS_FILE}: it did not finish (continue it "
                                "with `audiotune pretrain ... --resume`)")
    outputs = json.loads(metrics.read_text(encoding="utf-8")).get(PRETRAIN_OUTPUTS) or []
    if not outputs or not (run_dir / outputs[0]).exists():
        raise FileNotFoundError(f"{metrics}: names no pretrained encoder that exists in {run_dir} ({outputs})")
    return run_dir / outputs[0]


def load_encoder_run(run: str | Path, layer: int = -1, pooling: str | None = None) -> tuple[RunConfig, EncoderEmbedder]:
    """The encoder of a pretrain run (its config and the weights it wrote), without heads."""
    run_dir = resolve_run_dir(run)
    config = rebuild_config(run_dir)
    weights = _pretrained_weights(run_dir)
    backbone = build_backbone(config, pretrained=False)
    backbone.load_pretrained(weights)
    return config, EncoderEmbedder(backbone, layer, pooling or config.classifier.pooling_mode)


def _named_encoder(config: RunConfig | None) -> RunConfig:
    """``config`` of a pretrained encoder (``-c CHECKPOINT --model NAME``), or an error saying how to name one."""
    if config is None:
        raise ValueError("extract: give --run RUN, or -c CHECKPOINT --model NAME for a pretrained encoder")
    if not config.model.checkpoint:
        raise ValueError("extract without --run: name the pretrained encoder with -c CHECKPOINT (a Hugging Face "
                         "folder or hub id, an SSAST .pth, ...) and --model NAME")
    return config


def _resolved_encoder(config: RunConfig) -> RunConfig:
    """``config`` of a pretrained encoder resolved, or an error naming its options that would change nothing."""
    resolve_config(config)
    problems = ignored_options(config)
    if problems:
        raise ValueError(" / ".join(problems))
    return config


def embedder_config(run: str | None, encoder: RunConfig | None = None) -> RunConfig:
    """The config :func:`load_embedder` returns, read without building a model (the inputs are checked first)."""
    if run is not None:
        return rebuild_config(run)
    return _resolved_encoder(copy.deepcopy(_named_encoder(encoder)))


def load_encoder(config: RunConfig, pooling: str | None = None) -> tuple[RunConfig, EncoderEmbedder]:
    """A pretrained encoder as ``config`` describes it (``-c CHECKPOINT --model NAME`` and its options)."""
    _resolved_encoder(_named_encoder(config))
    backbone = build_backbone(config, pretrained=True)
    return config, EncoderEmbedder(backbone, config.classifier.layer, pooling or config.classifier.pooling_mode)


def load_embedder(run: str | None, encoder: RunConfig | None = None, kind: str = "ft",
                  pooling: str | None = None) -> tuple[RunConfig, Any]:
    """What ``extract`` embeds with: a trained run's classifier; its backbone alone for a token pool; the
    encoder of a pretrain run; or, without a run, the pretrained encoder ``encoder`` describes."""
    if run is None:
        config, embedder = load_encoder(_named_encoder(encoder), pooling)
    elif is_encoder_run(run):
        config, embedder = load_encoder_run(run, pooling=pooling)
    else:
        config, classifier = load_run(run)
        check_weighted(classifier.backbone, kind)
        if pooling is not None and kind != "ft":  # ft embeddings: --pooling_mode merges the heads
            check_pooling(classifier.backbone, pooling)
        if pooling is None or pooling in FRAME_POOLS:
            return config, classifier
        if kind != "pt":
            raise ValueError(f"--pooling_mode {pooling}: chooses the tokens of pt embeddings (the seed's --task at "
                             f"extraction); {kind} embeddings merge the heads by {' or '.join(FRAME_POOLS[:2])}")
        embedder = EncoderEmbedder(classifier.backbone, config.classifier.layer, pooling, kinds=("pt",))
    embedder.check(kind, pooling)
    return config, embedder
