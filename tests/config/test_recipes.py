"""Shipped recipes: found by name from any directory (subfolders too), by path, or an error listing them."""
from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from audiotune.cli import build_parser, config_from_args, main
from audiotune.config import recipe_description, recipe_names, recipe_root, resolve_recipe
from audiotune.config.recipes import RECIPE_SUFFIX


def parse(*argv: str):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_recipes_ship_inside_the_package_and_are_package_data() -> None:
    assert recipe_root().parent.name == "audiotune" and "ecapa_short_speech" in recipe_names()
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["audiotune"]
    for path in recipe_root().rglob(f"*{RECIPE_SUFFIX}"):
        relative = path.relative_to(recipe_root().parent)
        assert any(fnmatch(relative.as_posix(), pattern) for pattern in globs), relative


def test_a_recipe_by_name_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    by_name = parse("--config", "ecapa_new_speakers")
    assert by_name.train.adapt_bn == "subject" and by_name.data.mixup == 0.5
    assert parse("--config", "ecapa_short_speech").model.options["channels"] == [256, 256, 256, 256, 768]
    # the spelling of earlier releases (a path in a source checkout) still names the recipe
    assert parse("--config", "configs/ecapa_new_speakers.yaml").train.adapt_bn == "subject"
    assert parse("--config", "ecapa_new_speakers", "--adapt_bn", "none").train.adapt_bn == "none"  # flags win


def test_a_file_by_path_wins_over_a_recipe_of_the_same_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ecapa_short_speech").write_text("train:\n  epochs: 7\n")
    assert parse("--config", "ecapa_short_speech").train.epochs == 7
    assert parse("--config", str(tmp_path / "ecapa_short_speech")).train.epochs == 7


def test_recipes_in_subfolders_are_named_by_their_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "recipes"
    (root / "seeds").mkdir(parents=True)
    (root / "seeds" / "tiny.yaml").write_text("# a recipe in a subfolder\ntrain:\n  epochs: 3\n")
    (root / "plain.yaml").write_text("train:\n  epochs: 2\n")
    monkeypatch.setattr("audiotune.config.recipes.recipe_root", lambda: root)
    assert recipe_names() == ["plain", "seeds/tiny"]
    assert parse("--config", "seeds/tiny").train.epochs == 3
    assert recipe_description(root / "seeds" / "tiny.yaml") == "a recipe in a subfolder"
    assert recipe_description(root / "plain.yaml") == ""


def test_an_unknown_name_is_an_error_listing_the_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="ecapa_new_speakers, ecapa_short_speech"):
        resolve_recipe("ecapa_fast")
    assert main(["train", "--config", "ecapa_fast", "-d", "x", "-l", "y", "-o", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--config ecapa_fast" in error and "ecapa_short_speech" in error
    assert not (tmp_path / "run").exists()


def test_the_recipes_command_lists_each_with_its_first_comment_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == recipe_names()
    short = next(line for line in lines if line.startswith("ecapa_short_speech"))
    assert short.split(None, 1)[1] == recipe_description(recipe_root() / "ecapa_short_speech.yaml")
    assert short.split(None, 1)[1].startswith("ECAPA-TDNN from scratch on short speech clips")
    assert main(["recipes", "--paths"]) == 0
    assert str(recipe_root() / "ecapa_short_speech.yaml") in capsys.readouterr().out


def test_every_shipped_recipe_says_what_it_is_in_one_sentence_of_its_first_line() -> None:
    """`audiotune recipes` lists each recipe's first comment line: a sentence, not one cut before its command."""
    for name in recipe_names():
        text = recipe_description(recipe_root() / f"{name}{RECIPE_SUFFIX}")
        assert text and text.endswith((".", ")")) and not text.endswith(":"), (name, text)


@pytest.mark.parametrize("name", [name for name in recipe_names() if name.startswith("seeds/naip_")])
def test_every_naip_seed_recipe_centres_and_pads_its_clips_as_the_seeds(name: str) -> None:
    """The NAIP seeds' Truncate padded a clip shorter than --clip_length with its mean, and their mixup stage then
    subtracted it: the clip and its silence, which the model read (seed-notes 1.4)."""
    from audiotune.config import config_from_dict, read_config_file

    audio = config_from_dict(read_config_file(resolve_recipe(name))).audio
    assert (audio.pad_clips, audio.remove_dc, audio.clip_length) == (True, True, 10.0)


@pytest.mark.parametrize(("flags", "reads_padding"), [((), False), (("--fbank", "True"), True),
                                                     (("--fbank", "True", "--n_fft", "1024"), True)])
def test_the_ecapa_seed_recipe_reads_its_fbank_padding_in_fbank_mode_alone(flags: tuple[str, ...],
                                                                          reads_padding: bool) -> None:
    """The ECAPA seed's fbank mode read every clip as its --n_fft frames, padding included; its MFCC mode (the
    recipe's) has no frame count, where the recipe's read_padding does nothing and is left at its default."""
    config = parse("--config", "seeds/naip_ecapa", *flags)
    assert config.model.options.get("read_padding", False) is reads_padding
