"""One classifier for every backbone: layer choice or weighted sum → masked pooling → shared dense → heads."""
from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from audiotune.config import ClassifierConfig, HeadSpec
from audiotune.data.batch_features import batch_lengths
from audiotune.models.backbones import Backbone
from audiotune.models.heads import ACTIVATIONS, ClassificationHead, shared_dense

EMBEDDING_TYPES = ("pt", "wt", "st", "ft")
# how ft embeddings merge the heads unless asked otherwise: the seeds' extraction default, whatever the run pooled
FT_MERGE_DEFAULT = "mean"
FT_MERGES = ("mean", "sum")  # how ft embeddings can merge the heads (the seeds refused max too)


def masked_pool(hidden: Tensor, mask: Tensor, mode: str) -> Tensor:
    """Pool (B, T, D) over the frames where ``mask`` (B, T) is True only."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    if mode == "sum":
        return (hidden * weights).sum(1)
    if mode == "max":
        return hidden.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    raise ValueError(f"pooling mode '{mode}' is not one of mean, sum, max")


def ft_merge_refusal(merge: str) -> str:
    """Why ``--pooling_mode merge`` gives no ft embedding, and what to write instead."""
    return (f"--pooling_mode {merge}: ft embeddings merge the heads by {' or '.join(FT_MERGES)}; use -pm "
            f"{' or -pm '.join(FT_MERGES)}, or --embedding_type pt, wt or st to pool the frames by {merge}")


def without_last_frame(mask: Tensor) -> Tensor:
    """``mask`` (B, T) without each row's last True frame (kept when it is the row's only one)."""
    counts = mask.sum(1, keepdim=True)
    return mask & ((mask.long().cumsum(1) < counts) | (counts <= 1))


class Classifier(nn.Module):
    """Backbone + heads; ``forward`` returns the heads' logits concatenated in label-file order."""

    def __init__(self, backbone: Backbone, heads: list[HeadSpec], config: ClassifierConfig,
                 freeze_backbone: bool = False, weighted_states: int | None = None, frozen_train_mode: bool = False):
        """``weighted_states``: how many hidden states, from state 0, ``--weighted`` sums (default: the backbone's
        :attr:`~Backbone.weighted_states`; a run saved before they were declared summed them all).
        ``frozen_train_mode``: a frozen backbone follows the classifier's mode (``--frozen_train_mode``)."""
        super().__init__()
        if not heads:
            raise ValueError("a classifier needs at least one head (a label file naming its columns)")
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        self.backbone_in_eval = freeze_backbone and not frozen_train_mode
        if freeze_backbone:
            backbone.requires_grad_(False).eval()
        if freeze_backbone and frozen_train_mode:  # BatchNorm reads batch statistics but keeps its own as loaded
            for module in backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.momentum = 0.0
        self.config = config
        num_states = backbone.num_hidden_states
        if not -num_states <= config.layer < num_states:
            raise ValueError(f"--layer {config.layer}: the backbone has hidden states 0..{num_states - 1}")
        # both start as the plain average: softmax over zeros, or raw weights of 1/n
        summed = backbone.weighted_states if weighted_states is None else weighted_states
        start = torch.full((summed,), 1.0 / summed) if config.layer_weights == "raw" else torch.zeros(summed)
        self.layer_weights = nn.Parameter(start) if config.weighted else None
        dim = backbone.embedding_dim
        self.frame_activation = ACTIVATIONS[config.frame_activation]() if config.frame_activation != "none" \
            else nn.Identity()
        self.dense = shared_dense(dim, config.sd_bottleneck) if config.shared_dense else nn.Identity()
        head_input = config.sd_bottleneck if config.shared_dense else dim
        self.classifiers = nn.ModuleList(
            ClassificationHead(head_input, config.clf_bottleneck, head.num_outputs, config.activation,
                               config.final_dropout, config.layernorm)
            for head in heads
        )

    def train(self, mode: bool = True) -> Classifier:
        """A frozen backbone stays in eval mode (no dropout, fixed normalisation statistics), unless it runs in
        training mode as the classifier does (``frozen_train_mode``: dropout, masks, BatchNorm on batch statistics;
        its running statistics do not move)."""
        super().train(mode)
        if self.backbone_in_eval:
            self.backbone.eval()
        return self

    def state_weights(self) -> Tensor | None:
        """The weight of each hidden state in the weighted sum: the softmax of the learned logits, or the learned
        weights as they are (``--layer_weights raw``); None for a model that is not ``--weighted``."""
        if self.layer_weights is None or self.config.layer_weights == "raw":
            return self.layer_weights
        return torch.softmax(self.layer_weights, dim=0)

    def _combine(self, states: list[Tensor] | tuple[Tensor, ...], layer: int | None, weighted: bool) -> Tensor:
        """One hidden state, or the weighted sum of the states the layer weights cover (from state 0)."""
        if not weighted:
            return states[self.config.layer if layer is None else layer]
        weights = self.state_weights()
        if weights is None:
            raise ValueError("embedding type 'wt' needs a model trained with --weighted")
        weights = weights.to(states[0].dtype)
        return torch.einsum("l,l...->...", weights, torch.stack(list(states[:len(weights)])))

    def frame_states(self, inputs: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """The backbone's hidden states after ``--frame_activation`` (the frames the heads read) and the mask of
        every real frame (``audiotune cluster --run`` labels them all)."""
        states, mask = self.backbone.hidden_states(inputs, lengths)
        return [self.frame_activation(state) for state in states], mask

    def _frames(self, inputs: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """:meth:`frame_states` and the frames pooled (``--pool_drop_last``). The activation is applied to each
        state before they are combined, so cached pooled states give the same logits."""
        states, mask = self.frame_states(inputs, lengths)
        if self.config.pool_drop_last:
            mask = without_last_frame(mask)
        return states, mask

    def _pooled(self, inputs: Tensor, lengths: Tensor | None, layer: int | None = None, weighted: bool | None = None,
                pooling: str | None = None) -> Tensor:
        states, mask = self._frames(inputs, lengths)
        mode = pooling or self.config.pooling_mode
        weighted = self.layer_weights is not None if weighted is None else weighted
        if weighted and self.config.layer_weights == "raw":  # as the seeds: each state pooled, then weighed
            return self._combine([masked_pool(state, mask, mode) for state in states], layer, weighted)
        return masked_pool(self._combine(states, layer, weighted), mask, mode)

    def pooled_states(self, inputs: Tensor, lengths: Tensor | None, pooling: str | None = None) -> Tensor:
        """Every hidden state pooled over real frames: (B, num_hidden_states, D), what the feature cache stores."""
        states, mask = self._frames(inputs, lengths)
        mode = pooling or self.config.pooling_mode
        return torch.stack([masked_pool(state, mask, mode) for state in states], dim=1)

    def _heads(self, pooled: Tensor) -> Tensor:
        shared = self.dense(pooled)
        return torch.cat([classifier(shared) for classifier in self.classifiers], dim=-1)

    def forward(self, inputs: Tensor, lengths: Tensor | None) -> Tensor:
        return self._heads(self._pooled(inputs, lengths))

    def forward_pooled(self, pooled_states: Tensor) -> Tensor:
        """Logits from cached :meth:`pooled_states` (equal to :meth:`forward` but for a softmax-weighted sum of
        max-pooled states)."""
        return self._heads(self._combine(pooled_states.unbind(1), None, self.layer_weights is not None))

    def forward_batch(self, batch: dict) -> Tensor:
        """Logits of a loader batch: cached pooled states or model inputs."""
        if "pooled" in batch:
            return self.forward_pooled(batch["pooled"])
        return self(batch["inputs"], batch_lengths(batch))

    def forward_with_embeddings(self, inputs: Tensor, lengths: Tensor | None,
                                merge: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, the pooled state the heads read (``pt``; ``wt`` for a weighted run) and the ``ft`` embedding
        (heads merged by ``merge``, default :data:`FT_MERGE_DEFAULT`) from one backbone pass."""
        pooled = self._pooled(inputs, lengths)
        shared = self.dense(pooled)
        logits = torch.cat([classifier(shared) for classifier in self.classifiers], dim=-1)
        return logits, pooled, self._merged_first_dense(shared, merge)

    def _merged_first_dense(self, shared: Tensor, merge: str | None) -> Tensor:
        """The heads' first dense outputs merged by mean or sum (the ``ft`` embedding)."""
        # self.classifiers holds only ClassificationHeads (built in __init__)
        per_head = torch.stack([cast(ClassificationHead, classifier).first_dense(shared)
                                for classifier in self.classifiers])
        merge = merge or FT_MERGE_DEFAULT
        if merge not in FT_MERGES:
            raise ValueError(ft_merge_refusal(merge))
        return per_head.mean(0) if merge == "mean" else per_head.sum(0)

    @torch.no_grad()
    def extract_embedding(self, inputs: Tensor, lengths: Tensor | None, kind: str = "ft", layer: int | None = None,
                          pooling: str | None = None) -> Tensor:
        """Embeddings: ``pt`` backbone layer, ``wt`` weighted sum, ``st`` shared dense, ``ft`` heads' first dense.

        ``ft`` merges the heads by ``pooling`` (mean or sum; default mean), as the seed repositories did.
        """
        if kind not in EMBEDDING_TYPES:
            raise ValueError(f"embedding type '{kind}' is not one of {EMBEDDING_TYPES}")
        if kind == "st" and not self.config.shared_dense:  # there is no shared dense layer to read
            raise ValueError("embedding type 'st' needs a model trained with --shared_dense")
        # pt / wt force one layer or the weighted sum; st / ft use what the model was trained with
        weighted = {"pt": False, "wt": True}.get(kind)
        # for ft, --pooling_mode merges the heads; frames are pooled as in training
        frame_pooling = None if kind == "ft" else pooling
        pooled = self._pooled(inputs, lengths, layer=layer, weighted=weighted, pooling=frame_pooling)
        if kind in ("pt", "wt"):
            return pooled
        shared = self.dense(pooled)
        if kind == "st":
            return shared
        return self._merged_first_dense(shared, pooling)
