"""Recipes: the YAML configs shipped inside the package (``audiotune/recipes/``, subfolders included), chosen by
name (``--config ecapa_new_speakers``, ``--config seeds/NAME``) or given by path from any directory."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

RECIPE_SUFFIX = ".yaml"
LEGACY_FOLDER = "configs/"  # where the recipes lay in a source checkout before they were shipped in the package


def recipe_root() -> Path:
    """The folder of the shipped recipes."""
    return Path(str(resources.files("audiotune") / "recipes"))


def recipe_names() -> list[str]:
    """Every shipped recipe's name: its path under the recipe folder, without ``.yaml`` (``seeds/naip_ssast``)."""
    root = recipe_root()
    return sorted(path.relative_to(root).with_suffix("").as_posix() for path in root.rglob(f"*{RECIPE_SUFFIX}"))


def recipe_description(path: str | Path) -> str:
    """The first comment line of a recipe (what it is for), or '' when it starts with none."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            return line.strip().removeprefix("#").strip() if line.lstrip().startswith("#") else ""
    return ""


def resolve_recipe(given: str) -> str:
    """The config file that ``--config given`` means: an existing file as it is; else a shipped recipe by name
    (``ecapa_new_speakers``, ``seeds/naip_ssast``; also spelt ``configs/NAME.yaml`` or ``NAME.yaml``, as earlier
    releases did); a remote path as it is. Anything else is an error listing the shipped recipes."""
    if "://" in given or Path(given).is_file():
        return given
    name = given.removeprefix("./").removeprefix(LEGACY_FOLDER).removesuffix(RECIPE_SUFFIX)
    candidate = recipe_root() / f"{name}{RECIPE_SUFFIX}"
    if name and candidate.is_file():
        return str(candidate)
    names = recipe_names()
    raise FileNotFoundError(f"--config {given}: config file not found, and no shipped recipe has that name; recipes: "
                            f"{', '.join(names) if names else 'none shipped'} (`audiotune recipes` describes them)")


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` (as :func:`resolve_recipe` gave it) is a shipped recipe."""
    return "://" not in str(path) and Path(path).resolve().is_relative_to(recipe_root().resolve())
