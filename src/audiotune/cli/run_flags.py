"""The flags of a command that loads a trained run: ``--run``, the data it scores, and the run's options it may set
anew (batch size, workers, bad audio, where it runs), each with its option's own spellings, choices and checks
(:func:`~audiotune.cli.flags.add_option_flag`); one not given is None, the run's value."""
from __future__ import annotations

import argparse
from typing import Any

from audiotune.cli.flags import (
    ONE_PROCESS_NOTES,
    add_option_flag,
    add_path,
    add_section_flags,
    add_storage_flags,
)
from audiotune.cli.seed_flags import in_bucket
from audiotune.config.sections import AUDIO_ROOT
from audiotune.outputs import run_dir_of
from audiotune.storage import Role

SCORING_DATA = tuple(f"data.{name}" for name in AUDIO_ROOT)  # data options a scoring command sets over the run's own
# the run's options a scoring command sets anew (for this scoring only): batching and bad audio, where it runs
BATCH_OPTIONS = ("train.batch_size", "runtime.num_workers", "data.on_error")
DEVICE_OPTIONS = ("runtime.accelerator", "runtime.devices", "runtime.precision")
SCORING_OPTIONS = (*BATCH_OPTIONS, *DEVICE_OPTIONS, "runtime.num_nodes")


class _OneRun(argparse.Action):
    """Stores the run; a second spelling (``--run`` and the seeds' ``-mp``) naming another run is an error, not
    the last one silently."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        given = getattr(namespace, self.dest, None)
        if given not in (None, self.default, values):
            parser.error(f"{option_string} {values}: the run is given already ({given}); give one")
        setattr(namespace, self.dest, values)


def add_run_flag(parser: argparse.ArgumentParser, required: bool = True,
                 help: str = "run directory of `audiotune train`", default: str | None = None) -> None:
    """``--run``: the run directory a command reads (or the model.safetensors inside it); ``help``: what the run is
    to the command."""
    add_path(parser, "--run", "--trained_mdl_path", "--trained-mdl-path", "-mp", "--finetuned_mdl_path",
             "--finetuned-mdl-path", role=Role.RUN, dest="run", required=required, type=run_dir_of, default=default,
             action=_OneRun,
             help=f"{help} (or the model.safetensors inside it)")


def add_run_options(parser: Any, keys: tuple[str, ...], notes: dict[str, str] | None = None) -> None:
    """The options ``keys`` (``section.name``) as flags that set a loaded run's value (dest ``name``, None unless
    given); ``notes``: what an option means to this command, by name, after the option's help."""
    for key in keys:
        add_option_flag(parser, key, of_run=True, note=(notes or {}).get(key.partition(".")[2], ""))


def add_scoring_flags(parser: argparse.ArgumentParser, run_required: bool = True, data_note: str = "") -> None:
    """The flags of a command that scores rows with a trained run: the run, the data (``-d``, ``-i/-s`` as in
    train; ``data_note``: what ``-d`` is to the command), batching, bad audio, where it runs."""
    add_run_flag(parser, run_required)
    add_option_flag(parser, "data.data_split_root", note=data_note, required=True)
    add_section_flags(parser, SCORING_DATA)
    add_run_options(parser, BATCH_OPTIONS)
    add_device_flags(parser, processes=True)
    add_run_options(parser, ("runtime.num_nodes",))
    add_storage_flags(parser)


def add_device_flags(parser: argparse.ArgumentParser, processes: bool = False) -> None:
    """--accelerator/--devices/--precision of a command that loads a run; they override the run's config.
    ``processes``: the command runs one process per device (else it uses the first)."""
    several = "; here one process per device, each scoring its share of the rows" if processes else \
        ONE_PROCESS_NOTES["runtime.devices"] + " (of the run's several, the first)"
    add_run_options(parser, DEVICE_OPTIONS, {"devices": several})


def scoring_options(args: argparse.Namespace) -> dict[str, Any]:
    """``{name: value}`` of the run's options a scoring command sets anew (None: the run's), as the engine's
    scoring functions take them."""
    return {name: vars(args).get(name) for name in (key.partition(".")[2] for key in SCORING_OPTIONS)}


def scoring_data(args: argparse.Namespace, options: tuple[str, ...] = SCORING_DATA,
                 bucket_read: bool = False) -> dict[str, Any]:
    """``{name: value}`` of the data options (``options``, :data:`SCORING_DATA` unless the command takes more)
    given to a scoring command; ``-i PREFIX`` with ``-b BUCKET`` is in the bucket, as in ``train``. ``bucket_read``:
    the command reads ``-b`` elsewhere too (extract's encoder config); else ``-b`` without ``--cloud`` or a relative
    ``-i`` would do nothing (the run's own audio root is read) and is refused."""
    data = {key.partition(".")[2]: value for key, value in vars(args).items() if key in options}
    bucket = vars(args).get("bucket_name")
    if bucket and not bucket_read and not vars(args).get("cloud") and "://" in str(data.get("prefix", "://")):
        raise ValueError(f"-b/--bucket_name {bucket}: the bucket that a relative -i/--prefix is read from or that "
                         "--cloud uploads to, here neither (without -i the run's own audio root is read): give "
                         "-i PREFIX or --cloud, or leave -b out")
    if "prefix" in data:
        data["prefix"] = in_bucket(args, str(data["prefix"]))
    return data
