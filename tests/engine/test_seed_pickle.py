"""The seeds' args.pkl: a Namespace of plain values is read at every pickle protocol; anything else is refused
before it runs."""
from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import pytest

from audiotune.engine.seed_pickle import SeedArgsError, read_seed_args

ARGS = argparse.Namespace(prefix="/data", layer=-1, learning_rate=3e-4, freeze=True, seed=None,
                          label_groups=[["slow rate", "strained"], ["distortions"]], n_class=(2, 1), extra={"a": 1})


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_namespace_of_plain_values_reads_back_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "args.pkl"
    path.write_bytes(pickle.dumps(ARGS, protocol=protocol))
    assert read_seed_args(path) == vars(ARGS)


class Hook:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize(("value", "problem"), [
    (Hook(), "builtins.eval, which is not allowed"),
    ({1, 2}, "args['nested'] is a set, not a plain value"),
    (argparse.Namespace(inner=1), "args['nested'] is a Namespace, not a plain value"),
])
def test_anything_but_plain_values_is_refused_naming_the_file(tmp_path: Path, value: object, problem: str) -> None:
    path = tmp_path / "args.pkl"
    path.write_bytes(pickle.dumps(argparse.Namespace(layer=1, nested=value)))
    expected = f"{re.escape(str(path))}: refused as seed arguments: .*{re.escape(problem)}"
    with pytest.raises(SeedArgsError, match=expected):
        read_seed_args(path)


def test_the_reconstructor_of_old_protocols_builds_nothing_but_a_namespace(tmp_path: Path) -> None:
    path = tmp_path / "args.pkl"
    path.write_bytes(pickle.dumps(Path("x"), protocol=0).replace(b"pathlib", b"argparse"))
    with pytest.raises(SeedArgsError, match="refused as seed arguments"):
        read_seed_args(path)
    path.write_bytes(b"ccopy_reg\n_reconstructor\n(cargparse\nNamespace\nc__builtin__\nint\nI3\ntR.")
    with pytest.raises(SeedArgsError, match="names builtins.int, which is not allowed"):
        read_seed_args(path)


def test_a_file_that_is_no_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "args.pkl"
    path.write_text("layer: 1\n")
    with pytest.raises(SeedArgsError, match=f"{path}: refused as seed arguments"):
        read_seed_args(path)
    with pytest.raises(SeedArgsError, match="cannot be read"):
        read_seed_args(tmp_path / "missing.pkl")
