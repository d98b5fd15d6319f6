"""What a Hugging Face speech checkpoint declares about its input, read from its configs without its weights."""
from __future__ import annotations

from typing import Any


def conv_receptive_field(hf_config: Any) -> int:
    """Samples a convolutional feature encoder (``conv_kernel``/``conv_stride``) needs for one frame."""
    field, hop = 1, 1
    for kernel, stride in zip(hf_config.conv_kernel, hf_config.conv_stride):
        field += (kernel - 1) * hop
        hop *= stride
    return field


def extractor_settings(checkpoint: str) -> dict[str, Any]:
    """``sampling_rate``, ``do_normalize``, ``return_attention_mask`` of the checkpoint's feature extractor.

    Read with ``AutoFeatureExtractor`` (no weights loaded); when the checkpoint has no
    ``preprocessor_config.json`` the fallback is what the released wav2vec2 / HuBERT / WavLM / data2vec
    extractors mostly use: 16 kHz with per-clip normalisation, and an attention mask unless the encoder's
    feature extractor uses group norm.
    """
    from transformers import AutoConfig, AutoFeatureExtractor

    group = getattr(AutoConfig.from_pretrained(checkpoint), "feat_extract_norm", "layer") == "group"
    try:
        extractor = AutoFeatureExtractor.from_pretrained(checkpoint)
    except (OSError, ValueError):  # no preprocessor_config.json (or offline without a cache)
        return {"sampling_rate": 16000, "do_normalize": True, "return_attention_mask": not group}
    return {"sampling_rate": int(extractor.sampling_rate),
            "do_normalize": bool(getattr(extractor, "do_normalize", False)),
            "return_attention_mask": bool(getattr(extractor, "return_attention_mask", not group))}
