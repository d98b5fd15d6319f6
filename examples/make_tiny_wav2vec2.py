#!/usr/bin/env python
"""Write a tiny, randomly initialised wav2vec2 checkpoint folder, offline, in ``save_pretrained`` layout.

It stands in for ``facebook/wav2vec2-base`` where no model hub can be reached: every command that takes a hub
id (``-c facebook/wav2vec2-base``) takes this folder through the same ``from_pretrained`` call. The folder holds
the pretraining parts too (quantizer and projections), so task-adaptive pretraining (``pretrain --objective
tapt``) continues it, and a 16 kHz normalising feature extractor. Two transformer layers of width 32 and a
two-layer CNN front end (a frame every 10 samples): it learns nothing useful, it only runs fast.

Usage::

    python examples/make_tiny_wav2vec2.py --out /tmp/tiny-wav2vec2
"""
from __future__ import annotations

import argparse

import torch
import transformers

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (32, 32), "conv_kernel": (10, 3), "conv_stride": (5, 2), "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2, "feat_extract_norm": "layer", "do_stable_layer_norm": True,
        "num_codevector_groups": 2, "num_codevectors_per_group": 8, "codevector_dim": 16,
        "proj_codevector_dim": 16, "num_negatives": 5, "mask_time_prob": 0.2, "mask_time_length": 2,
        "layerdrop": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**TINY))
    model.save_pretrained(args.out)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                          return_attention_mask=True).save_pretrained(args.out)
    print(f"{args.out}: tiny wav2vec2 ({sum(p.numel() for p in model.parameters()):,} parameters, quantizer "
          f"included)")


if __name__ == "__main__":
    main()
