"""Reading weights safely: safetensors or ``torch.load(weights_only=True)``, wrapper prefixes stripped,
every mismatch reported with the file's name."""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

_PREFIXES = ("module.", "embedding_model.")  # DataParallel / SpeechBrain-hparams wrappers
_NESTED_KEYS = ("state_dict", "model", "embedding_model", "module")


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the model."""


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be read safely (a pickle of Python objects, a damaged or foreign file)."""


def torch_refusal(path: str | Path, err: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``err``, in one line naming ``path``: the Python object it
    would not unpickle, or that the file is no torch checkpoint at all, with torch's own first line (the
    unpickler's, where torch wraps it in its note on ``weights_only``)."""
    text = str(err).strip()
    if isinstance(err, OSError):  # the file itself cannot be opened or read (permissions, a folder, a lost mount)
        return f"{path}: cannot be read ({err.strerror or text or type(err).__name__})"
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", text)
    if found:
        return f"{path}: holds Python objects besides tensors ({found.group(1)}), which are never unpickled"
    inner = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    first = inner.group(1) if inner else re.split(r"(?<=\.)\s", text.splitlines()[0], maxsplit=1)[0] if text else ""
    if not first or isinstance(err, (KeyError, EOFError)):  # their text alone ('101', nothing) says too little
        first = f"{type(err).__name__}{f': {first}' if first else ''}"
    return f"{path}: not a torch checkpoint (damaged, or a file of another format; torch: {first})"


def torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``: code besides the weights), which
    ``torch.load`` would hand to ``torch.jit.load``; ask before loading, so that it is refused without that detour."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):  # not a zip (an older torch file), or unreadable: torch.load says why
        return False


def torchscript_refusal(path: str | Path) -> str:
    """The one line refusing the TorchScript archive ``path``, with what to give instead."""
    return (f"{path}: a TorchScript archive (code besides weights), which is never loaded; give weights only: a "
            ".safetensors file, or a torch file of a state dict (torch.save(model.state_dict(), PATH))")


def load_torch_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every refusal one line naming the file and what is read:
    tensors and plain containers only (a file holding other Python objects could run code when unpickled)."""
    import pickle
    import zipfile

    if torchscript_archive(path):
        raise CheckpointReadError(torchscript_refusal(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError) as err:
        reason = torch_refusal(path, err)
        if "GLOBAL" in str(err):
            reason += (" (they could run code); give weights only: a .safetensors file, or a torch file of a state "
                       "dict (torch.save(model.state_dict(), PATH))")
        raise CheckpointReadError(reason) from None


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on the CPU; a damaged or foreign file is a :class:`CheckpointReadError`
    naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for a damaged file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointReadError(f"{path}: cannot be read as safetensors ({first}); the file is damaged or "
                                  "incomplete") from None


def read_state_dict(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Load tensors from a mapping, ``.safetensors`` or a torch file (weights_only); return it and its name."""
    if isinstance(source, Mapping):
        return dict(source), "<state dict>"
    path = Path(source)
    if path.is_dir():  # e.g. the w2v2 seed's -c wav2vec2-base-960h given to a model that reads one weights file
        raise FileNotFoundError(f"checkpoint {path}: a folder, where a weights file (.ckpt, .pt, .safetensors) is "
                                "expected; a Hugging Face encoder folder or hub id is read with --model hf")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path), str(path)
    obj = load_torch_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return dict(obj), str(path)


def flatten_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Unwrap ``{"state_dict": {...}}``-style nesting and strip wrapper prefixes."""
    while not all(torch.is_tensor(v) for v in state.values()):
        nested = next((state[k] for k in _NESTED_KEYS if isinstance(state.get(k), Mapping)), None)
        if nested is None:
            state = {k: v for k, v in state.items() if torch.is_tensor(v)}  # drop metadata
            break
        state = dict(nested)
    out: dict[str, Any] = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out


def load_checked(target: nn.Module, path_or_state_dict: str | Path | Mapping[str, Any], strict: bool = True) -> Any:
    """Load weights into ``target``: nesting unwrapped, ``module.``/``embedding_model.`` prefixes stripped.

    Shape mismatches, and with ``strict`` missing/unexpected keys, raise :class:`CheckpointMismatchError`
    naming the file. Returns torch's ``(missing_keys, unexpected_keys)`` result.
    """
    raw, name = read_state_dict(path_or_state_dict)
    state = flatten_state_dict(raw)
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if shapes or (strict and (missing or unexpected)):
        lines = [f"checkpoint {name} does not match {type(target).__name__}:"]
        if missing and strict:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected and strict:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
        raise CheckpointMismatchError("\n".join(lines))
    return target.load_state_dict(state, strict=strict)
