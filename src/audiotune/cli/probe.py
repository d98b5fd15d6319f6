"""``audiotune probe``: the same head trained on every hidden state of a frozen encoder."""
from __future__ import annotations

import argparse
from pathlib import Path

from audiotune.cli.command import Command
from audiotune.cli.flags import add_config_flags, config_from_args
from audiotune.cli.show import quiet_lightning, shown
from audiotune.outputs import PROBE_FILE


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_config_flags(parser, model=model)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.probe import probe
    from audiotune.engine.report import report_when_done

    quiet_lightning(args.verbose)
    config = config_from_args(args)
    table = probe(config)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"probe table: {shown(Path(config.exp_dir) / PROBE_FILE)}")
    if config.runtime.report:
        print(report_when_done(config.exp_dir))


COMMAND = Command("probe", "train the same head on every hidden state of a frozen encoder", arguments, run)
