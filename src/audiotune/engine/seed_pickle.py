"""Reading the seed systems' ``args.pkl`` (a pickled ``argparse.Namespace``) without running anything in it.

A pickle can name any importable callable and have it called while it loads (``__reduce__``), so the file is
read by an unpickler that resolves one global only, ``argparse.Namespace``; every other global (``os.system``,
``builtins.eval``, a class of the seed's own code) stops the read before it is called. What the file may hold
besides is what pickle builds from its own opcodes: str, int, float, bool, None, list, tuple, dict (and bytes).
"""
from __future__ import annotations

import argparse
import io
import pickle
from pathlib import Path
from typing import Any

NAMESPACE = ("argparse", "Namespace")
# protocols 0 and 1 build an instance with copyreg._reconstructor(cls, object, None)
RECONSTRUCTOR, OBJECT = ("copyreg", "_reconstructor"), ("builtins", "object")
PYTHON2_MODULES = {"copy_reg": "copyreg", "__builtin__": "builtins"}  # as protocols 0-2 name them
PLAIN = (str, int, float, bool, type(None), bytes)


class SeedArgsError(ValueError):
    """An ``args.pkl`` that is not a plain argparse.Namespace (the message names the file)."""


def _reconstruct(cls: Any, base: Any, state: Any) -> argparse.Namespace:
    """``copyreg._reconstructor`` for a Namespace only (it could build any class from ``base``)."""
    if cls is not argparse.Namespace or base is not object or state is not None:
        raise pickle.UnpicklingError("it reconstructs something other than an argparse.Namespace")
    return argparse.Namespace()


class _NamespaceOnly(pickle.Unpickler):
    """Resolves ``argparse.Namespace`` (and, for protocols 0 and 1, the reconstructor of one) and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        module = PYTHON2_MODULES.get(module, module)
        if (module, name) == NAMESPACE:
            return argparse.Namespace
        if (module, name) == RECONSTRUCTOR:
            return _reconstruct
        if (module, name) == OBJECT:
            return object
        raise pickle.UnpicklingError(f"it names {module}.{name}, which is not allowed (only argparse.Namespace "
                                     "and plain values are read)")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds persistent references, which are not allowed")


def _check_plain(value: Any, where: str) -> None:
    """Lists, tuples and dicts of plain values only (a Namespace inside a Namespace is refused too)."""
    if isinstance(value, PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise pickle.UnpicklingError(f"{where} is a {type(value).__name__}, not a plain value")


def read_seed_args(path: str | Path) -> dict[str, Any]:
    """The seed's arguments (``vars(namespace)``) from ``args.pkl``; a file that holds anything but a Namespace
    (or dict) of plain values is refused with a :class:`SeedArgsError` naming it, before any of it runs."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SeedArgsError(f"{path}: cannot be read ({err.strerror or err})") from err
    try:
        loaded = _NamespaceOnly(io.BytesIO(data)).load()
        if isinstance(loaded, argparse.Namespace):
            loaded = vars(loaded)
        if not isinstance(loaded, dict):
            raise pickle.UnpicklingError(f"it holds a {type(loaded).__name__}, not an argparse.Namespace")
        _check_plain(loaded, "args")
    except SeedArgsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError) as err:
        raise SeedArgsError(f"{path}: refused as seed arguments: {err}") from None
    return {str(key): value for key, value in loaded.items()}
