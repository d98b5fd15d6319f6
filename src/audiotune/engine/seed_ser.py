"""The speech-emotion seed system (FT-w2v2-ser) carried over: its Lightning checkpoints as a wav2vec2 encoder
folder, and its k-means frame labels (``all-clus.json``) as the pseudo-label parquet of ``pretrain --objective
ptapt``.

The seed saved with PyTorch Lightning 1.4, which keys each callback's state by its class (a pickled reference
to ``pytorch_lightning...ModelCheckpoint``), so ``torch.load(weights_only=True)`` refuses the file. It is read
by the same weights-only unpickler with each such name bound to an inert stand-in (:class:`Unread`) that is
never the real class: nothing outside torch's weights-only allowlist is imported or run, names torch blocks
outright (``os``, ``posix``, ``subprocess``, ...) still fail, and only ``state_dict`` is kept.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from audiotune import storage
from audiotune.atomic import atomic_dir, atomic_path, written_together
from audiotune.data.audio import open_audio
from audiotune.data.pseudo_labels import METADATA_KEY, SCHEMA, FramesMade, check_cluster_counts
from audiotune.models.backbones.hf_checkpoint import check_available, weights_quietly
from audiotune.models.state_dict import torch_refusal, torchscript_archive
from audiotune.outputs import check_output_path, frame_label_sidecars

MAX_STAND_INS = 16  # different globals a checkpoint may name besides tensors
# where the seed's modules keep the Hugging Face wav2vec2 model (V-FT: model.wav2vec2.wav2vec2; TAPT, P-TAPT:
# wav2vec2.wav2vec2), and TAPT's whole Wav2Vec2ForPreTraining (quantizer included)
ENCODER_PREFIXES = ("model.wav2vec2.wav2vec2.", "wav2vec2.wav2vec2.")
PRETRAINING_PREFIX = "wav2vec2.wav2vec2PT."
WAV2VEC1_PREFIX = "wav2vec."  # PretrainedEmoClassifier.wav2vec (Wav2vecWrapper): fairseq's wav2vec v1, stage 1
SEED_RATE, SEED_HOP, SEED_FIELD = 16000, 320, 400  # wav2vec2-base frames: every 320 samples, 400 samples each
FRAME_SLACK = 2  # frames a label list may differ from the encoder's count (the seed clustered wav2vec v1 frames)


class Unread:
    """Stands in for a class a checkpoint names outside the tensors (a callback's key, a hyperparameter
    Namespace): built from nothing, its state dropped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def read_lightning_state(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The ``state_dict`` of a Lightning checkpoint, and the globals read as :class:`Unread` stand-ins."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    if torchscript_archive(path):
        raise ValueError(f"{path}: a TorchScript archive (the seed's script.pt), code besides weights: import the "
                         "eager.pt state dict saved beside it (the same model)")
    stand_ins: list[str] = []
    for _ in range(MAX_STAND_INS + 1):
        try:
            with torch.serialization.safe_globals([(type("Unread", (Unread,), {}), name) for name in stand_ins]):
                loaded = torch.load(str(path), map_location="cpu", weights_only=True)
            break
        except Exception as err:  # torch's UnpicklingError, or a damaged file
            named = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            if named is None or named.group(1) in stand_ins or len(stand_ins) == MAX_STAND_INS:
                detail = re.search(r"(Trying to load unsupported GLOBAL [^\n]*?blocked)", str(err))
                if detail is None:
                    raise ValueError(torch_refusal(path, err)) from None
                raise ValueError(f"{path}: refused as a checkpoint: {detail.group(1)}") from None
            stand_ins.append(named.group(1))
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping) or not any(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: no state_dict of tensors in this checkpoint")
    return {str(k): v for k, v in state.items() if torch.is_tensor(v)}, stand_ins


def seed_encoder_state(state: Mapping[str, torch.Tensor], path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The Hugging Face keys of the seed's wav2vec2: ``Wav2Vec2ForPreTraining`` keys when the checkpoint holds
    TAPT's quantizer (``True``), else ``Wav2Vec2Model`` keys."""
    if any(key.startswith(PRETRAINING_PREFIX) for key in state):
        return {k[len(PRETRAINING_PREFIX):]: v for k, v in state.items() if k.startswith(PRETRAINING_PREFIX)}, True
    for prefix in ENCODER_PREFIXES:
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return found, False
    if any(key.startswith(WAV2VEC1_PREFIX) for key in state):
        raise ValueError(f"{path}: a wav2vec v1 (fairseq) model, the seed's P-TAPT stage-1 classifier, which no "
                         "audiotune backbone reads: import the all-clus.json its cluster.py wrote (`import clusters`), "
                         "or train a stage-1 run (`train --config seeds/ser_vft`) and `cluster --run` it")
    raise ValueError(f"{path}: no wav2vec2 weights (keys under {', '.join(ENCODER_PREFIXES + (PRETRAINING_PREFIX,))}"
                     f"); first keys: {list(state)[:3]}")


def import_ser_encoder(path: str | Path, architecture: str, out: str | Path) -> dict[str, Any]:
    """Write the wav2vec2 of a seed checkpoint as a ``save_pretrained`` folder (``-c`` of train, pretrain,
    cluster); ``architecture``: the hub id or folder whose config (and feature extractor) the seed trained."""
    from transformers import AutoConfig, Wav2Vec2ForPreTraining, Wav2Vec2Model

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not empty; give a new folder for the encoder")
    state, stand_ins = read_lightning_state(path)
    weights, pretraining = seed_encoder_state(state, path)
    check_available(architecture, "-c")  # no network and no local copy: one line at once
    try:
        config = AutoConfig.from_pretrained(architecture)
    except (OSError, ValueError) as err:
        raise ValueError(f"-c {architecture}: the encoder's architecture cannot be read ({str(err).splitlines()[0]}); "
                         "give the folder or cached hub id the seed fine-tuned (facebook/wav2vec2-base)") from None
    model = (Wav2Vec2ForPreTraining if pretraining else Wav2Vec2Model)(config)
    own = model.state_dict()
    renamed = {today_name(k, own): v for k, v in weights.items()}
    unknown = sorted(set(renamed) - set(own))
    missing = sorted(k for k in set(own) - set(renamed) if not k.endswith("masked_spec_embed"))
    reshaped = sorted(k for k in set(own) & set(renamed) if own[k].shape != renamed[k].shape)
    if unknown or missing or reshaped:
        raise ValueError(f"{path}: its wav2vec2 does not fit the architecture of {architecture}: "
                         + "; ".join(f"{what} {keys[:4]}" for what, keys in
                                     (("unknown", unknown), ("missing", missing), ("other shapes", reshaped)) if keys))
    model.load_state_dict(renamed, strict=False)
    with atomic_dir(out) as folder, weights_quietly():
        model.save_pretrained(str(folder))
        save_seed_extractor(architecture, folder)
    unused = sorted({".".join(k.split(".")[:2]) for k in state
                     if not k.startswith(ENCODER_PREFIXES + (PRETRAINING_PREFIX,))})
    return {"checkpoint": str(path), "encoder": str(out), "pretraining_heads": pretraining,
            "stand_ins": stand_ins, "unused": unused, "tensors": len(renamed)}


def save_seed_extractor(architecture: str, folder: Path) -> None:
    """The encoder folder's feature extractor: the architecture's, but not normalising the waveform (the seed fed
    soundfile's samples as they are, in pretraining and fine-tuning alike)."""
    from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

    try:
        extractor = AutoFeatureExtractor.from_pretrained(architecture)
    except (OSError, ValueError):
        extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SEED_RATE, padding_value=0.0,
                                             return_attention_mask=False)
    extractor.do_normalize = False
    extractor.save_pretrained(str(folder))


def today_name(key: str, own: Mapping[str, Any]) -> str:
    """transformers 4.10's weight-norm names (``weight_g``/``weight_v``) as today's parametrization."""
    for old, new in ((".weight_g", ".parametrizations.weight.original0"),
                     (".weight_v", ".parametrizations.weight.original1")):
        if key.endswith(old) and key not in own:
            return key[: -len(old)] + new
    return key


def _label_lists(uid: str, value: Any, num_clusters: list[int], path: Path) -> list[np.ndarray]:
    """One label array per K from ``{k}-clus.json`` (a flat list: one K) or ``all-clus.json`` (a list per K)."""
    if not isinstance(value, list):
        raise ValueError(f"{path}: '{uid}' holds {json.dumps(value)}, not a list of frame labels (or one per K)")
    lists = [value] if value and not isinstance(value[0], list) else value
    if len(lists) != len(num_clusters):
        raise ValueError(f"{path}: '{uid}' has {len(lists)} label lists, --num_clusters names {len(num_clusters)} "
                         f"({num_clusters})")
    arrays = []
    for k, labels in zip(num_clusters, lists):
        bad = [v for v in labels if not isinstance(v, int) or isinstance(v, bool)] \
            if isinstance(labels, list) else [labels]
        if bad:
            raise ValueError(f"{path}: '{uid}': {json.dumps(bad[0])} in its labels for K={k}, not a cluster index "
                             "(whole numbers from 0)")
        array = np.asarray(labels, dtype=np.int64)
        if array.ndim != 1 or (len(array) and (array.min() < 0 or array.max() >= k)):
            raise ValueError(f"{path}: '{uid}': labels outside 0..{k - 1} for K={k} (is --num_clusters in the "
                             "order the seed's cluster.py was given?)")
        arrays.append(array)
    if len({len(a) for a in arrays}) > 1:
        raise ValueError(f"{path}: '{uid}': the label lists of its K values differ in length")
    return arrays


def _encoder_frames(audio: str) -> int:
    with open_audio(audio) as handle:
        samples = round(handle.frames * SEED_RATE / handle.samplerate)
    return max(0, (samples - SEED_FIELD) // SEED_HOP + 1)


def import_clusters(path: str | Path, num_clusters: list[int], out: str | Path,
                    audio_dir: str | Path | None = None) -> dict[str, Any]:
    """``all-clus.json`` (``{wav: [[labels K1], [labels K2], ...]}``) or one ``{K}-clus.json`` → pseudo-label
    parquet. With ``audio_dir`` (the seed's --datadir) each clip's labels are fitted to wav2vec2-base's frame count
    of its audio, as the seed's second stage sliced them (at most FRAME_SLACK frames cut or the last repeated)."""
    if Path(out).suffix.lower() != ".parquet":
        raise ValueError(f"--out {out}: give a .parquet file name (the table is written as parquet)")
    check_cluster_counts(num_clusters)
    path, out = Path(path), check_output_path(out)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable cluster JSON ({err})") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected {{wav: [[labels of K1], [labels of K2], ...]}} as cluster.py writes")
    rows: dict[str, list] = {"uid": [], "k": [], "labels": []}
    fitted = {}
    for uid, value in raw.items():
        arrays = _label_lists(uid, value, num_clusters, path)
        if audio_dir is not None:
            audio = storage.join(audio_dir, uid)
            if not storage.isfile(audio):
                raise ValueError(f"{path}: '{uid}' has no audio file {audio}")
            frames = _encoder_frames(audio)
            if abs(frames - len(arrays[0])) > FRAME_SLACK:
                raise ValueError(f"{path}: '{uid}' has {len(arrays[0])} frame labels, but its audio makes {frames} "
                                 "wav2vec2 frames (is --audio_dir the seed's --datadir of 16 kHz files?)")
            if frames != len(arrays[0]):
                fitted[uid] = frames - len(arrays[0])
                arrays = [np.concatenate([a, np.repeat(a[-1:], max(0, frames - len(a)))])[:frames] for a in arrays]
        for k, labels in zip(num_clusters, arrays):
            rows["uid"].append(uid)
            rows["k"].append(int(k))
            rows["labels"].append(labels.astype(np.int32))
    meta = FramesMade(encoder=f"FT-w2v2-ser cluster.py ({path})", run=False, model="hf", layer=None,
                      sample_rate=SEED_RATE, hop_samples=SEED_HOP, num_clusters=[int(k) for k in num_clusters]).record(
        clips=len(raw), imported_from=str(path), frames_fitted=fitted, frames_checked=audio_dir is not None)
    table = pa.table(rows, schema=SCHEMA.with_metadata({METADATA_KEY: json.dumps(meta).encode()}))
    with written_together([out, *frame_label_sidecars(out)]), atomic_path(out) as partial:
        pq.write_table(table, partial)  # its arrival removes the files that described earlier labels
    return meta
