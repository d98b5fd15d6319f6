"""models/state_dict.py: a file torch.load(weights_only=True) refuses is named with what is wrong with it."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from audiotune.models.state_dict import CheckpointReadError, load_torch_file, read_state_dict, torch_refusal

NOT_TORCH = "not a torch checkpoint (damaged, or a file of another format; torch: "


def refusal(path: Path) -> str:
    with pytest.raises(Exception) as raised:
        torch.load(str(path), map_location="cpu", weights_only=True)
    return torch_refusal(path, raised.value)


def test_each_refused_file_is_said_to_be_what_it_is(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"weight": torch.zeros(2)}, good)
    junk, cut, empty, text, objects = (tmp_path / f"{name}.pt" for name in ("junk", "cut", "empty", "text", "objects"))
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    cut.write_bytes(good.read_bytes()[:200])
    empty.write_bytes(b"")
    text.write_text("hello world\n")
    torch.save({"weight": torch.zeros(2), "args": argparse.Namespace(lr=1.0)}, objects)
    assert refusal(junk).startswith(f"{junk}: {NOT_TORCH}Unsupported operand ")
    assert refusal(cut) == f"{cut}: {NOT_TORCH}PytorchStreamReader failed reading zip archive: failed finding " \
                           "central directory.)"
    assert refusal(empty) == f"{empty}: {NOT_TORCH}EOFError)"
    assert refusal(text).startswith(f"{text}: {NOT_TORCH}KeyError")
    assert refusal(objects) == f"{objects}: holds Python objects besides tensors (argparse.Namespace), which are " \
                               "never unpickled"
    for path in (junk, text):
        assert "documentation" not in refusal(path) and "weights_only" not in refusal(path)
    with pytest.raises(CheckpointReadError, match=rf"^{junk}: not a torch checkpoint"):
        load_torch_file(junk)
    with pytest.raises(CheckpointReadError, match=rf"^{tmp_path}: cannot be read \(Is a directory\)$"):
        load_torch_file(tmp_path)
    with pytest.raises(CheckpointReadError, match=r"\(argparse.Namespace\).*could run code.*safetensors"):
        load_torch_file(objects)


def test_a_torchscript_archive_is_refused_before_torch_hands_it_on(tmp_path: Path) -> None:
    """torch.load hands a TorchScript archive to torch.jit.load, warning first: it is refused before, one line, no
    warning; a torch file of weights is read as before."""
    import warnings

    from audiotune.engine.seed_import import SeedImportError, read_seed_weights
    from audiotune.models.state_dict import torchscript_archive

    script, weights = tmp_path / "script.pt", tmp_path / "weights.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.ones(1, 2)), script)
    torch.save(torch.nn.Linear(2, 2).state_dict(), weights)
    assert torchscript_archive(script) and not torchscript_archive(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointReadError, match=rf"^{script}: a TorchScript archive \(code besides weights\), "
                                                      r"which is never loaded; give weights only: a \.safetensors"):
            load_torch_file(script)
        with pytest.raises(SeedImportError, match=rf"^{script}: a TorchScript archive"):
            read_seed_weights(script)
        assert set(load_torch_file(weights)) == {"weight", "bias"}


def test_a_folder_given_for_a_weights_file_is_said_to_be_one(tmp_path: Path) -> None:
    """The w2v2 seed's -c was a Hugging Face folder: given to a model that reads one weights file (the default
    ECAPA-TDNN), the error says it is a folder and names --model hf, not that it was not found."""
    with pytest.raises(FileNotFoundError, match=rf"^checkpoint {tmp_path}: a folder, where a weights file .* is "
                                                r"expected; a Hugging Face encoder folder or hub id is read with "
                                                r"--model hf$"):
        read_state_dict(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"^checkpoint not found: {tmp_path / 'missing.ckpt'}$"):
        read_state_dict(tmp_path / "missing.ckpt")
