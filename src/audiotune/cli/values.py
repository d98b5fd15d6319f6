"""How a flag's text becomes its value: booleans as the seeds wrote them, whole numbers, counts, and a config
field's annotation (with its literal words) as an argparse type."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

from audiotune.config.options import FALSE_WORDS, TRUE_WORDS, literal_words

Options = TypeVar("Options")


def parse_bool(text: str | bool) -> bool:
    """'True'/'False'/'1'/'0'/'yes'/'no' as the seeds' command lines pass booleans."""
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {text!r}")


def cluster_counts(text: str) -> list[int]:
    """Cluster counts as given: ``64``, or the seed's comma list ``64,512,4096`` (same meaning)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: cluster counts are whole numbers, e.g. 64 512 4096") from None
    if not counts or min(counts) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: every cluster count must be at least 2")
    return counts


class FlatCounts(argparse.Action):
    """``--num_clusters 64 512`` and ``--num_clusters 64,512`` alike: one flat list of counts."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [k for group in values for k in group])


def integer(text: str) -> int:
    """An integer, also written as a whole float ("300.0": how tuning services pass discrete values)."""
    try:
        return int(text)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise ValueError(f"{text!r} is not a whole number") from None
        return int(number)


def value_parser(kind: Any) -> Any:
    """The argparse type of an option annotated ``kind``: a bool, int, float or str, or one of the words of a
    ``Literal`` beside it (``int | Literal["auto"]`` takes 4 and auto)."""
    words = literal_words(kind)
    base = next((t for t in (bool, int, float, str) if t in (kind, *typing.get_args(kind))), str)
    convert = parse_bool if base is bool else integer if base is int else base

    def parse(text: str) -> Any:
        if text.strip().lower() in words:
            return text.strip().lower()
        try:
            return convert(text)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"expected {base.__name__}{''.join(f' or {w}' for w in words)}, "
                                             f"got {text!r}") from None
    parse.__name__ = base.__name__  # argparse names the type in its messages
    return parse if words else convert


def none_lower(text: str) -> str:
    return "none" if text.strip().lower() == "none" else text


def options_of(cls: type[Options], args: argparse.Namespace, **converted: Any) -> Options:
    """The options dataclass ``cls`` from the flags of its fields' names (a field without a flag keeps its
    default; ``converted``: values the caller made from the flags)."""
    given = {**vars(args), **converted}
    return cls(**{spec.name: given[spec.name] for spec in dataclasses.fields(cls)  # type: ignore[arg-type]
                  if spec.name in given})
