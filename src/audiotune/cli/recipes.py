"""``audiotune recipes``: the shipped recipes, one line each (the first comment line of the file)."""
from __future__ import annotations

import argparse

from audiotune.cli.command import Command


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    parser.add_argument("--paths", action="store_true", help="also print where each recipe file is")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.config import recipe_description, recipe_names, recipe_root

    names = recipe_names()
    width = max((len(name) for name in names), default=0)
    for name in names:
        path = recipe_root() / f"{name}.yaml"
        line = f"{name:{width}s}  {recipe_description(path)}"
        print(f"{line}\n{'':{width}s}  {path}" if args.paths else line)


COMMAND = Command("recipes", "list the shipped recipes (use one with --config NAME)", arguments, run,
                  description="Recipes are YAML configs shipped with audiotune: `--config NAME` starts a command from "
                              "one (any flag overrides it); `--config PATH` takes your own file.",
                  examples="audiotune recipes\n"
                           "audiotune train --config ecapa_short_speech -d split -l labels.txt -o run")
