"""What a Hugging Face speech checkpoint declares about its input, read from its configs without its weights, how
its weights are read and written quietly, and how a model whose weights are loaded next skips drawing random ones."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)
_LOADED_NEXT = contextvars.ContextVar("weights_loaded_next", default=False)


@contextmanager
def weights_loaded_next() -> Iterator[None]:
    """Build models in this block for a caller that loads every weight next (strictly): a transformers model built
    from its config (:func:`from_config_initialised`) then skips its random initialisation, which for a
    wav2vec2-base-sized encoder costs seconds, longer than the load itself."""
    token = _LOADED_NEXT.set(True)
    try:
        yield
    finally:
        _LOADED_NEXT.reset(token)


def from_config_initialised() -> contextlib.AbstractContextManager:
    """Around building a transformers model from its config alone: random weights drawn as usual, or none inside
    :func:`weights_loaded_next` (transformers' own ``no_init_weights``: the tensors are allocated, not drawn)."""
    if not _LOADED_NEXT.get():
        return contextlib.nullcontext()
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x kept it here
        from transformers.modeling_utils import no_init_weights  # type: ignore[attr-defined,no-redef]
    return no_init_weights()


# the transformers model types --model hf reads: a convolutional feature encoder whose frames a transformer reads
# one for one, so that each clip's frames are masked and pooled as its own
HF_ENCODER_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat",
                    "wav2vec2-conformer")
# model types another backbone reads, and those --model hf cannot read as it reads the others
READ_ELSEWHERE = {"whisper": "--model whisper", "audio-spectrogram-transformer": "--model ast"}
UNREAD_TYPES = {"sew": "its transformer reads its frames squeezed to fewer", "sew-d": "its transformer reads its "
                "frames squeezed to fewer"}


def check_encoder_type(checkpoint: str, flag: str = "-c") -> None:
    """An error naming what ``checkpoint`` is when --model hf cannot read it: another backbone's (Whisper, AST),
    an encoder whose frames the transformer does not read one for one (SEW), or no speech encoder at all."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(checkpoint).model_type
    if model_type in HF_ENCODER_TYPES:
        return
    if model_type in READ_ELSEWHERE:
        raise ValueError(f"{flag} {checkpoint}: its model type is {model_type}, which {READ_ELSEWHERE[model_type]} "
                         "reads")
    why = UNREAD_TYPES.get(model_type, "not a speech encoder of the wav2vec2 kind")
    raise ValueError(f"{flag} {checkpoint}: its model type is {model_type}, {why}; --model hf reads "
                     f"{', '.join(HF_ENCODER_TYPES)} encoders")


def conv_receptive_field(hf_config: Any) -> int:
    """Samples a convolutional feature encoder (``conv_kernel``/``conv_stride``) needs for one frame."""
    field, hop = 1, 1
    for kernel, stride in zip(hf_config.conv_kernel, hf_config.conv_stride):
        field += (kernel - 1) * hop
        hop *= stride
    return field


@contextmanager
def weights_quietly() -> Iterator[None]:
    """transformers' own progress bars while a model's weights are read or written ("Loading weights", "Writing
    model shards") show with -v only: they pass in a moment and count transformers' internal steps. A download
    keeps huggingface_hub's bar."""
    from transformers.utils import logging as transformers_logging

    if log.isEnabledFor(logging.INFO):
        yield
        return
    previous = transformers_logging.set_tqdm_hook(
        lambda factory, args, kwargs: transformers_logging.EmptyTqdm(*args, **kwargs))
    try:
        yield
    finally:
        transformers_logging.set_tqdm_hook(previous)


CLASSIFICATION = "ForSequenceClassification"  # an architecture with a classifier head on its encoder


def report_loading(checkpoint: str, hf_config: Any, loading: dict[str, Any]) -> None:
    """What ``from_pretrained`` left out of the bare encoder, one warning each (transformers' own report shows with
    -v only): encoder tensors not in the checkpoint, and the head of an audio classification model."""
    if loading["missing_keys"]:
        missing = sorted(loading["missing_keys"])
        log.warning("-c %s: %d encoder tensor(s) not in the checkpoint start at random values, e.g. %s",
                    checkpoint, len(missing), missing[0])
    unused = [key for key in loading["unexpected_keys"] if key.startswith(("projector.", "classifier."))]
    if unused and any(name.endswith(CLASSIFICATION) for name in getattr(hf_config, "architectures", None) or []):
        log.warning("-c %s: an audio classification model; %d tensor(s) of its head (projector, classifier) are not "
                    "used by the encoder: `audiotune import tap2key %s -o RUN` keeps them", checkpoint,
                    len(unused), checkpoint)


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


def normalises(settings: dict[str, Any], waveform_norm: bool | None, version: int) -> bool:
    """Whether an encoder reads each clip normalised to zero mean and unit variance: ``--waveform_norm`` as given,
    else (and in a config written before the option was the user's choice) as its checkpoint's feature extractor
    (``settings``: :func:`extractor_settings`) does."""
    from audiotune.config.run import WAVEFORM_NORM_VERSION

    if waveform_norm is None or version < WAVEFORM_NORM_VERSION:
        return bool(settings["do_normalize"])
    return waveform_norm


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
CONNECT_SECONDS = 3.0  # one connection attempt to the hub; transformers alone retries for about a minute


@functools.cache
def _hub_reachable(endpoint: str) -> bool:
    """Whether a TCP connection to the hub's host opens (checked once per process)."""
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=CONNECT_SECONDS).close()
    except OSError:
        return False
    return True


def _go_offline() -> None:
    """transformers and huggingface_hub read only their cache from now on (this process and those it starts)."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"


def check_available(checkpoint: str, flag: str = "--checkpoint") -> None:
    """Fail at once, in one line, when ``checkpoint`` is a hub id that can be neither downloaded nor read from the
    local cache. A local folder or file is left to its loader. Without a network (the hub's host does not answer,
    or ``HF_HUB_OFFLINE`` is set) a cached copy is read in offline mode, without transformers' retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(checkpoint).expanduser().exists() or "://" in checkpoint or not HUB_ID.fullmatch(checkpoint):
        return
    unreachable = not constants.HF_HUB_OFFLINE and not _hub_reachable(constants.ENDPOINT)
    if unreachable:
        _go_offline()
    elif not constants.HF_HUB_OFFLINE:
        return
    if isinstance(try_to_load_from_cache(checkpoint, "config.json", cache_dir=constants.HF_HUB_CACHE), str):
        log.info("%s %s: no network; the cached copy is read", flag, checkpoint)
        return
    why = f"{constants.ENDPOINT} cannot be reached" if unreachable or _hub_reachable.cache_info().currsize else \
        "HF_HUB_OFFLINE is set"
    raise ValueError(f"{flag} {checkpoint}: not a local folder, {why}, and no copy is cached; give a folder written "
                     "by save_pretrained (see the README's 'Models without a network')")
