"""--help: every flag once with its default, a command's own options first, rare groups summarised (--help-all
shows them in full), examples last; -v before or after the command."""
from __future__ import annotations

import pytest

from audiotune.cli import build_parser, config_from_args, main


def help_text(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_train_help_fits_a_screenful_and_help_all_shows_everything(capsys, monkeypatch) -> None:
    brief = help_text(capsys, monkeypatch, "train", "--model", "ecapa_tdnn", "--help")
    full = help_text(capsys, monkeypatch, "train", "--model", "ecapa_tdnn", "--help-all")
    assert len(brief.splitlines()) < 120 < len(full.splitlines())
    assert brief.startswith("usage: audiotune train [options]")
    # a summarised group names its flags with their short defaults; --help-all gives each its help and default
    assert "--tshift=0.0  --speed=0.0" in brief and "probability of a random time shift" not in brief
    assert "-e/--epochs=1  -bs/--batch_size=8  -lr/--learning_rate=0.0003" in brief
    assert "--channels" in brief and "--channels=" not in brief  # a list's default is left to --help-all
    assert "--tshift X" in full and "probability of a random time shift (up to ±0.5 s) (default 0.0" in \
        " ".join(full.split())
    assert "--lin_neurons" in brief and "--model_size" not in brief  # the chosen backbone's flags only
    # and of the model section's, those it reads: ECAPA-TDNN has no convolutional feature encoder to freeze
    assert "--freeze_feature_encoder" not in full and "--frozen_train_mode" in brief
    hf = help_text(capsys, monkeypatch, "train", "--model", "hf", "--help")
    assert "--freeze_feature_encoder [BOOL]" in hf and "--freeze_feature_projection [BOOL]" in hf
    whisper = help_text(capsys, monkeypatch, "train", "--model", "whisper", "--help")
    assert "--freeze_feature_encoder [BOOL]" in whisper and "--freeze_feature_projection" not in whisper
    assert "--clip-length" not in full and "--clip_length X" in full  # each flag spelt once (both parse)


def test_the_description_is_one_paragraph_filled_to_the_screen(capsys, monkeypatch) -> None:
    top = help_text(capsys, monkeypatch, "--help")
    paragraph = top.split("\n\n")[1].splitlines()
    assert paragraph[0].startswith("audiotune turns labelled audio")
    assert all(60 < len(line) <= 80 for line in paragraph[:-1]), paragraph
    full = " ".join(help_text(capsys, monkeypatch, "train", "--help-all").split())
    assert "(default 0; valid [0, 4294967295])" in full  # an integer bound as an integer


def test_every_config_option_shows_its_default(capsys, monkeypatch) -> None:
    full = " ".join(help_text(capsys, monkeypatch, "train", "--help-all").split())
    for text in ("training epochs (default 1; valid [0, inf))", "batch size (default 8;", "(default cosine)",
                 "(default 512 512 512 512 1536;", "(default 16000;"):
        assert text in full, text


def test_own_options_first_then_shared_groups_then_examples(capsys, monkeypatch) -> None:
    cv = help_text(capsys, monkeypatch, "cv", "--help")
    assert cv.index("\nfolds:") < cv.index("\ndata:") < cv.index("\ncloud storage")
    assert cv.rstrip().splitlines()[-5] == "examples:" and "audiotune cv -d table.csv" in cv.splitlines()[-4]
    train = help_text(capsys, monkeypatch, "train", "--help")
    assert train.index("--hypertune_metric") < train.index("\ndata:")


def test_split_fractions_have_help_and_defaults(capsys, monkeypatch) -> None:
    text = " ".join(help_text(capsys, monkeypatch, "split", "--help").split())
    assert "--test_fraction X share of the rows held out for test, drawn as whole --group values (at least one); " \
           "with --train_task/--test_task, a share of the subjects (default: 0.2)" in text
    assert "(at least one; 0: no val.csv); with --train_task/--test_task, a share of the subjects (default: 0.1)" \
        in text and "--seed N random seed of the draw" in text


@pytest.mark.parametrize("argv, verbose", [(["-v", "recipes"], True), (["recipes", "-v"], True),
                                           (["recipes", "--verbose"], True), (["recipes"], False)])
def test_verbose_before_or_after_the_command(argv: list[str], verbose: bool) -> None:
    assert build_parser().parse_args(argv).verbose is verbose


@pytest.mark.parametrize("argv", [["import", "taps", "d", "--out", "t.csv", "-v"],
                                  ["vertex", "results", "hpjob.json", "--out", "t.csv", "--verbose"],
                                  ["import", "-v", "taps", "d", "--out", "t.csv"]])
def test_verbose_after_a_subcommand(argv: list[str], capsys, monkeypatch) -> None:
    assert build_parser().parse_args(argv).verbose is True
    subcommand = [word for word in argv if not word.startswith("-")][:2]
    assert "--help-all" in help_text(capsys, monkeypatch, *subcommand, "--help")


def test_help_all_lists_only_what_the_command_takes(capsys, monkeypatch) -> None:
    """cv draws each fold's validation by --val_group: its --val_share is refused, so not listed; evaluate scores
    with the run's own config, so no --config."""
    cv = help_text(capsys, monkeypatch, "cv", "--help-all")
    assert "--val_group" in cv and "--val_share" not in cv
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cv", "-d", "t.csv", "--val_share", "0.2"])
    assert "--val_share: cv folds take their validation from --val_group" in capsys.readouterr().err
    evaluate = help_text(capsys, monkeypatch, "evaluate", "--help-all")
    assert "--aggregate" in evaluate and "--config" not in evaluate


def test_an_option_s_help_says_what_it_means_to_its_command(capsys, monkeypatch) -> None:
    """Where a command reads a shared option its own way, its help says so beside the option's help."""
    extract = " ".join(help_text(capsys, monkeypatch, "extract", "--help-all").split())
    assert extract.count("with --run, the crop of every clip embedded (there its default is the run's crop of "
                         "scored clips)") == 2  # --clip_length and --eval_clip_length
    pretrain = " ".join(help_text(capsys, monkeypatch, "pretrain", "--help-all").split())
    assert "here 0, the default, is a tenth of the rows (no validation: --val_size 0)" in pretrain
    train = " ".join(help_text(capsys, monkeypatch, "train", "--help-all").split())
    assert "not --val_size subjects (0: off) (default 0.0" in train


@pytest.mark.parametrize(("command", "flag", "default"), [
    ("pretrain", "--model MODEL", "ssast"), ("cluster", "--model MODEL", "hf"),
    ("train", "--model MODEL", "ecapa_tdnn"), ("cluster", "--layer N", "-1"),
])
def test_a_flag_s_help_shows_the_default_its_command_uses(capsys, monkeypatch, command: str, flag: str,
                                                          default: str) -> None:
    full = " ".join(help_text(capsys, monkeypatch, command, "--help-all").split())
    assert full[full.index(flag):].split("(default ", 1)[1].startswith(f"{default})")  # the flag's own
    args = build_parser().parse_args([command, "-d", "split", *(["-c", "enc", "--out", "x.parquet", "--num_clusters",
                                                                  "2"] if command == "cluster" else [])])
    config = config_from_args(args, read_inputs=False)
    assert str(config.model.model if flag.startswith("--model") else config.classifier.layer) == default


def test_pretrain_shows_no_subject_count_it_would_refuse(capsys, monkeypatch) -> None:
    full = " ".join(help_text(capsys, monkeypatch, "pretrain", "--help-all").split())
    entry = full[full.index("--val_size N"):]
    assert "by default pretraining validates on the val part" in entry[:entry.index("--seed N")]
    assert "(default 50" not in entry[:entry.index("--seed N")]


def test_every_command_ends_its_help_with_examples_that_parse(capsys, monkeypatch) -> None:
    """Each example is a command line its parser takes as written (a note after four spaces left out)."""
    import shlex

    from audiotune.cli import COMMANDS

    for command in COMMANDS:
        lines = command.examples.splitlines()
        assert lines, f"{command.name}: no examples"
        shown = " ".join(help_text(capsys, monkeypatch, command.name, "--help").split())
        assert shown.endswith(" ".join(lines[-1].split())), command.name
        for line in lines:
            argv = shlex.split(line.split("    (")[0])
            assert argv[0] == "audiotune", line
            build_parser().parse_args(argv[1:])  # an unknown flag or a bad value exits here


def test_an_unknown_flag_is_the_command_s_error_naming_the_closest_flag(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "-d", "split", "-l", "labels.txt", "-o", "run", "--epoch", "1"])
    err = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2 and err == ["usage: audiotune train [options]",
                                            "audiotune train: error: unrecognized arguments: --epoch 1 (did you mean "
                                            "--epochs?)"]
    with pytest.raises(SystemExit):
        main(["import", "naip", "x.pt", "-o", "run", "--zzz"])
    assert capsys.readouterr().err.rstrip().endswith("audiotune import naip: error: unrecognized arguments: --zzz")


@pytest.mark.parametrize("argv", [["evaluate", "--model", "hf", "--help"], ["-v", "evaluate", "--model", "hf", "-h"],
                                  ["train", "-e", "abc", "--help"], ["vertex", "job", "--replicas", "x", "--help"]])
def test_help_is_shown_whatever_else_the_line_holds(capsys, monkeypatch, argv: list[str]) -> None:
    """A flag the command refuses (evaluate takes the run's own --model) or a value out of range before --help
    was an error with status 2; help is what the line asks for."""
    shown = help_text(capsys, monkeypatch, *argv)
    assert shown.startswith(f"usage: audiotune {' '.join(word for word in argv[:2] if word[0] != '-')}")
