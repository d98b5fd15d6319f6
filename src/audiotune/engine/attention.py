"""``audiotune attention``: per-layer attention maps and attention rollout of one clip, as PNG files.

For models with class tokens (SSAST) a layer's map is the attention the class token(s) pay to each patch;
for models without (wav2vec2, HuBERT, WavLM) it is the attention each frame receives, averaged over the
queries. Rollout (Abnar & Zuidema, 2020) multiplies the layers' head-averaged attention, each mixed
half-and-half with the identity for the residual path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from audiotune.atomic import written_together
from audiotune.data.audio import load_clip
from audiotune.data.features import kaldi_fbank
from audiotune.data.frontend import FrontEnd, waveform_batch
from audiotune.engine.device import autocast, check_one_process
from audiotune.engine.inference import override_device
from audiotune.models.backbones import SupportsAttention, input_spec
from audiotune.models.checkpoint import load_run, resolve_run_dir
from audiotune.outputs import ATTENTION_DIR, ATTENTION_ROLLOUT_PLOT, attention_layer_plot, is_attention_map
from audiotune.report.plots import plot_attention


def _received(attention: Tensor, prefix: int) -> Tensor:
    """(tokens, tokens) head-averaged attention -> what each patch/frame gets from the class tokens (or all)."""
    return attention[:prefix, prefix:].mean(0) if prefix else attention.mean(0)


def rollout(attentions: list[Tensor]) -> Tensor:
    """Attention rollout of head-averaged (tokens, tokens) maps, first layer first."""
    eye = torch.eye(attentions[0].shape[-1], dtype=attentions[0].dtype)
    result = eye
    for attention in attentions:
        mixed = 0.5 * attention + 0.5 * eye
        result = (mixed / mixed.sum(-1, keepdim=True)) @ result
    return result


def attention_maps(run: str, audio: str, out_dir: str | None = None, accelerator: str | None = None,
                   devices: str | None = None, precision: str | None = None) -> list[Path]:
    """Write ``attention_layerNN.png`` for every layer and ``attention_rollout.png``; returns the files.

    The encoder runs on ``accelerator``/``devices`` in ``precision`` (default: the run's own settings).
    """
    if devices is not None:  # of a run's own several devices (DDP training), the first is used
        check_one_process(devices, command="attention")
    config, model = load_run(run)
    device = override_device(config, accelerator, devices, precision)
    backbone = model.backbone
    if not isinstance(backbone, SupportsAttention):
        raise ValueError(f"{resolve_run_dir(run)}: a run of --model {config.model.model}, which does not expose "
                         "attention weights; attention maps are drawn of a transformer encoder's run (SSAST, "
                         "wav2vec2, ...)")
    inputs = input_spec(config)
    clip, rate = load_clip(audio, inputs.audio(train=True))
    front_end = FrontEnd(inputs, rate)
    front_end.check_clip(len(clip), audio)
    batch, lengths = front_end(*waveform_batch([clip]))  # fixed-size models (SSAST) see target_length frames
    inputs, length = batch[0], int(lengths[0])
    backbone.to(device).eval()
    with torch.inference_mode(), autocast(device, config.runtime.precision):
        _, _, attentions = backbone.hidden_states_with_attention(inputs[None].to(device),
                                                                 torch.tensor([length], device=device))
        # head-averaged maps back on the CPU for the rollout and the plots
        averaged = [a[0].float().mean(0).cpu() for a in attentions]
    prefix, grid, covered = backbone.attention_layout()
    shown = inputs.T.numpy() if inputs.dim() == 2 else kaldi_fbank(torch.from_numpy(clip), rate, 80).T.numpy()
    out = Path(out_dir) if out_dir else resolve_run_dir(run) / ATTENTION_DIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    maps = [(f"layer {i + 1}", attention_layer_plot(i + 1), _received(a, prefix)) for i, a in enumerate(averaged)]
    maps.append(("rollout", ATTENTION_ROLLOUT_PLOT, _received(rollout(averaged), prefix)))
    # one set: an earlier clip's (or model's) maps this one does not replace go when the first new one takes its
    # place (written_together), and a stopped command leaves neither set in part
    earlier = [path for path in out.iterdir() if is_attention_map(path.name)
               and path.name not in {name for _, name, _ in maps}]
    with written_together([*(out / name for _, name, _ in maps), *earlier]):
        for title, name, values in maps:
            image = values.reshape(grid if grid else (1, -1)).numpy()
            written.append(plot_attention(shown, np.asarray(image), out / name, f"{Path(audio).name}: {title}",
                                          covered))
        for path in earlier:
            path.unlink(missing_ok=True)  # gone already, unless the maps were written otherwise than atomically
    return written
