"""Flag parsing: seed spellings, booleans bare or with a value, YAML configs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from audiotune.cli import build_parser, config_from_args, main, parse_bool
from audiotune.config import (
    CONFIG_VERSION,
    OWN_MEANINGS_VERSION,
    RunConfig,
    config_from_dict,
    config_to_dict,
    default_of,
    load_config,
    recipe_root,
    save_config,
)
from audiotune.models.backbones import input_spec, resolve_config
from audiotune.models.option_checks import checked_stages, idle_settings


def parse(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_defaults_keep_the_ecapa_seed_where_they_did_not_change() -> None:
    config = parse()
    assert (config.train.batch_size, config.train.learning_rate, config.train.epochs) == (8, 3e-4, 1)
    assert (config.features.n_mfcc, config.features.n_fft, config.features.n_mels) == (80, 400, 128)
    assert (config.audio.resample_rate, config.audio.clip_length, config.audio.channel_mode) == (16000, 10.0, "mean")
    assert (config.train.optim, config.train.weight_decay, config.classifier.final_dropout) == ("adamw", 1e-4, 0.3)


def test_newcomer_defaults_and_the_seed_behaviour_by_flags() -> None:
    ecapa_config = resolve_config(parse("--model", "ecapa_tdnn"))
    ecapa = input_spec(ecapa_config)
    assert (ecapa.features, ecapa.num_mel_bins, ecapa_config.train.scheduler) == ("fbank", 80, "cosine")
    assert (ecapa.freqm, ecapa.timem) == (8, 10)
    seed_config = resolve_config(parse("--fbank", "False", "--scheduler", "none", "--freqm", "0", "--timem", "0"))
    seed = input_spec(seed_config)
    assert (seed.features, seed_config.train.scheduler, seed.freqm, seed.timem) == ("mfcc", "none", 0, 0)
    ssast = input_spec(resolve_config(parse("--model", "ssast", "--model_size", "tiny")))
    assert (ssast.freqm, ssast.timem) == (0, 0)  # masking stays the SSAST user's choice


def test_shipped_recipes_load_and_flags_override_them() -> None:
    recipes = sorted(recipe_root().rglob("*.yaml"))
    assert recipes, "the package ships its recipes"
    for recipe in recipes:
        config = parse("--config", str(recipe), "-e", "2")  # hub ids of the seed recipes are not fetched here
        assert config.train.epochs == 2
        raw, loaded = yaml.safe_load(recipe.read_text()), config_to_dict(config)
        # the values whose switch is off where train trains the encoder (--layer_weights for --weighted, a
        # pretraining recipe's time spans without --mask_time_prob) are at their defaults: the recipe's way for when
        # it is on
        written = config_from_dict(raw)
        idle = {("model" if section == "options" else section, spec.name): default_of(spec)
                for section, spec, _ in idle_settings(written, checked_stages(written))}
        for section, values in raw.items():
            for name, value in values.items():
                if name != "epochs":
                    assert loaded[section][name] == idle.get((section, name), value), (recipe.name, section, name)


def test_a_recipe_written_by_an_earlier_release_is_options_the_backbone_reads_anew(tmp_path: Path) -> None:
    recipe = tmp_path / "best_config.yaml"  # e.g. a sweep's best trial: the user's options, an earlier version
    recipe.write_text(yaml.safe_dump({"model": {"model": "ecapa_tdnn"}, "version": 1}))
    config = resolve_config(parse("--config", str(recipe)))
    assert config.version == CONFIG_VERSION and input_spec(config).num_mel_bins == 80  # ECAPA-TDNN's own default


def test_seed_short_flags_and_underscore_or_hyphen_spellings() -> None:
    config = parse("-i", "/audio", "-s", "study1", "-d", "splits", "-l", "labels.txt", "-o", "out", "-bs", "4",
                   "-lr", "0.01", "-e", "3", "-nw", "2", "--clip-length", "2.5", "--sd_bottleneck", "32",
                   "--dataset-mean", "-4.2", "--dataset_std", "4.5", "--gauss", "0.5", "--pshiftn", "3")
    assert (config.data.prefix, config.data.study, config.data.data_split_root, config.data.label_txt) == \
        ("/audio", "study1", "splits", "labels.txt")
    assert config.exp_dir == "out"
    assert (config.train.batch_size, config.train.learning_rate, config.train.epochs, config.runtime.num_workers) == \
        (4, 0.01, 3, 2)
    assert config.audio.clip_length == 2.5 and config.classifier.sd_bottleneck == 32
    assert (config.features.dataset_mean, config.features.dataset_std) == (-4.2, 4.5)
    assert (config.augment.gauss, config.augment.pshiftn) == (0.5, 3)


@pytest.mark.parametrize("argv, expected", [(["--shared_dense"], True), (["--shared_dense", "True"], True),
                                            (["--shared_dense", "False"], False), (["--shared-dense", "0"], False),
                                            ([], False)])
def test_booleans_bare_or_with_a_value(argv: list[str], expected: bool) -> None:
    assert parse(*argv).classifier.shared_dense is expected


def test_reduce_false_and_seed_fbank_switch() -> None:
    config = parse("--reduce", "False", "--fbank", "True")
    assert config.audio.channel_mode == "none" and config.features.features == "fbank"
    assert parse("--reduce", "True", "--mono", "sum").audio.channel_mode == "sum"
    assert parse("--mono", "sum").audio.channel_mode == "sum" and parse("--reduce").audio.channel_mode == "sum"
    assert parse("--reduce", "True", "--mono", "mean").audio.channel_mode == "mean"
    with pytest.raises(ValueError, match="contradicts"):
        parse("--reduce", "False", "--channel_mode", "interleave")
    assert parse("--fbank", "False").features.features == "mfcc"
    assert parse("--scheduler", "None").train.scheduler == "none"


def test_the_seed_fbank_switch_s_help_gives_the_defaults_it_sizes_with(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--model", "ecapa_tdnn", "--help-all"])
    shown = " ".join(capsys.readouterr().out.split())
    sized = parse("--fbank", "True").features
    assert (f"True = --features fbank of --n_mels (default {sized.num_mel_bins}) bins and --n_fft (default "
            f"{sized.target_length}) frames") in shown


def test_bad_values_are_rejected() -> None:
    with pytest.raises(SystemExit):
        parse("--shared_dense", "maybe")
    with pytest.raises(SystemExit):
        parse("--scheduler", "exponential")
    with pytest.raises(Exception, match="boolean"):
        parse_bool("maybe")


def test_config_file_round_trip_and_flags_override(tmp_path) -> None:
    config = parse("-bs", "5", "--channels", "8", "8", "24")
    path = tmp_path / "c.yaml"
    save_config(config, path)
    assert load_config(path) == config
    overridden = parse("--config", str(path), "-e", "7")
    assert overridden.train.batch_size == 5 and overridden.train.epochs == 7
    assert overridden.model.options["channels"] == [8, 8, 24]
    path.write_text("train:\n  batchsize: 3\n")
    with pytest.raises(ValueError, match="batchsize"):
        load_config(path)


@pytest.mark.slow
def test_python_dash_m_runs_the_same_commands() -> None:
    import subprocess
    import sys

    from audiotune import __version__

    done = subprocess.run([sys.executable, "-m", "audiotune", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and __version__ in done.stdout
    done = subprocess.run([sys.executable, "-m", "audiotune", "train", "--epochs", "-1"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "--epochs" in done.stderr


def test_a_config_written_before_the_runtime_section_loads_into_it(tmp_path) -> None:
    from audiotune.config import config_to_dict

    earlier = config_to_dict(RunConfig())
    earlier["train"].update({**earlier.pop("runtime"), "num_workers": 3, "precision": "bf16"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**earlier, "version": OWN_MEANINGS_VERSION}))
    with pytest.raises(ValueError, match="options of the runtime section; write them under runtime:"):
        load_config(path)  # as today's version: what the flags mean
    path.write_text(yaml.safe_dump({**earlier, "version": OWN_MEANINGS_VERSION - 1}))
    config = load_config(path)
    assert (config.runtime.num_workers, config.runtime.precision) == (3, "bf16")
    assert "num_workers" not in config_to_dict(config)["train"]


def test_worker_count_and_audio_store_take_auto_or_a_value(tmp_path: Path) -> None:
    config = parse()
    assert (config.runtime.num_workers, config.runtime.audio_cache) == ("auto", "auto")
    config = parse("-nw", "3", "--audio_cache", "False")
    assert (config.runtime.num_workers, config.runtime.audio_cache) == (3, False)
    assert parse("--num_workers", "AUTO", "--audio_cache").runtime.audio_cache is True
    saved = tmp_path / "config.yaml"
    save_config(parse("-nw", "auto", "--audio_cache", "auto"), saved)
    loaded = load_config(saved)
    assert (loaded.runtime.num_workers, loaded.runtime.audio_cache) == ("auto", "auto")


@pytest.mark.parametrize("argv", [["-nw", "some"], ["-nw", "2.5"], ["--audio_cache", "sometimes"]])
def test_a_worker_count_or_store_choice_that_is_neither_value_nor_auto_is_refused(
        argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert argv[0] in capsys.readouterr().err


def test_a_negative_worker_count_is_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"--num_workers -1: must be in \[0, 1024\]"):
        parse("-nw", "-1")


def test_a_config_file_with_another_word_than_auto_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"runtime": {"num_workers": "many"}}))
    with pytest.raises(ValueError, match="num_workers: 'many'"):
        load_config(path)


def test_a_config_files_remote_inputs_are_read_only_where_the_command_reads_them(
        gcs, hf_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A --config file (a run's config.yaml records URLs) may name remote inputs of options a command does not
    read: probe, extract and cluster leave a pretraining option at its default, extract takes no label file, and
    train refuses the pretraining option by name; none of them is downloaded (the objects do not exist, so reading
    one would fail saying so). An input the command reads is still read from the bucket."""
    from conftest import BUCKET

    gcs.fs().pipe(f"{BUCKET}/labels.txt", b"pitch\n")
    absent = f"gs://{BUCKET}/absent"
    checkpoint = str(hf_checkpoints["w2v_layer"])
    path = tmp_path / "config.yaml"

    def run(argv: list[str], data: dict) -> str:
        path.write_text(yaml.safe_dump({"data": data, "model": {"model": "hf", "checkpoint": checkpoint,
                                                                "pseudo_labels": f"{absent}/labels.parquet"}}))
        assert main([argv[0], "--config", str(path), *argv[1:]]) == 2
        return capsys.readouterr().err

    labelled = {"label_txt": f"gs://{BUCKET}/labels.txt", "data_split_root": str(tmp_path / "no_split")}
    for argv in (["probe", "-o", str(tmp_path / "probe")], ["cluster", "--out", str(tmp_path / "k.parquet")],
                 ["extract", "-d", str(tmp_path / "t.csv"), "--out", str(tmp_path / "e.parquet")]):
        err = run(argv, labelled)
        assert f"options {argv[0]} does not take are left at their defaults (not --pseudo_labels {absent}/" in err
        assert f"{absent}/labels.parquet: not found" not in err, err
    err = run(["extract", "-d", str(tmp_path / "t.csv"), "--out", str(tmp_path / "e.parquet")],
              {"label_txt": f"{absent}/labels.txt"})
    assert f"{absent}/labels.txt: not found" not in err, err
    err = run(["probe", "-o", str(tmp_path / "probe")], {"label_txt": f"{absent}/labels.txt"})
    assert f"{absent}/labels.txt: not found" in err  # probe reads its label file
    err = run(["train", "-d", str(tmp_path / "no_split"), "-o", str(tmp_path / "run")], labelled)
    assert err.rstrip().endswith(f"--pseudo_labels {absent}/labels.parquet: acts only in audiotune pretrain"), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["table", "lake", "--out", "t.csv"], ["segment", "e.csv", "--out", "s.csv"],
                                     ["manifest", "wavs", "--out", "m.csv"],
                                     ["import", "taps", "rec", "--out", "s.csv"]])
def test_a_command_taking_one_option_takes_its_spellings_default_and_choices(
        command: list[str], capsys: pytest.CaptureFixture) -> None:
    """--on_error of a command that builds a table is the data option's flag: its default, spellings and choices."""
    assert build_parser().parse_args(command).on_error == RunConfig().data.on_error == "raise"
    assert build_parser().parse_args([*command, "--on-error", "skip"]).on_error == "skip"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--on_error", "ignore"])
    assert "--on_error/--on-error: invalid choice: 'ignore'" in capsys.readouterr().err


def test_split_seed_is_the_seed_options_flag(capsys: pytest.CaptureFixture) -> None:
    assert build_parser().parse_args(["split", "t.csv", "--out", "o"]).seed == RunConfig().data.seed
    with pytest.raises(SystemExit):
        build_parser().parse_args(["split", "t.csv", "--out", "o", "--seed", str(2**32)])
    assert "--seed 4294967296: must be in [0, 4294967295]" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "what", "role"), [
    ("train", "run directory for every output", "[run directory to write; may be gs://]"),
    ("cv", "the experiment's folder: a run directory per fold and repeat, and the summary",
     "[experiment folder; may be gs://]"),
    ("sweep", "the sweep's folder: a run directory per trial, the study and the summary", "[local only]")])
def test_a_path_s_help_says_the_role_its_command_gives_it(command: str, what: str, role: str,
                                                         capsys: pytest.CaptureFixture) -> None:
    """cv and sweep give -o another role than train's; the help says what it is to the command and the role it
    reads it with."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"-o, --exp_dir PATH {what} {role}" in out


def test_an_option_two_backbones_declare_alike_gives_each_ones_meaning_until_a_model_is_named(
        capsys: pytest.CaptureFixture) -> None:
    """--max_window 0 is the whole clip for --model hf and Whisper's own 30-s window for --model whisper."""
    def help_of(*argv: str) -> str:
        with pytest.raises(SystemExit):
            main(["train", *argv, "--help-all"])
        return " ".join(capsys.readouterr().out.split())

    both = help_of()
    assert "--max_window X --model hf: encode clips longer than this many seconds window by window (0 = whole clip); " \
           "--model whisper: encode clips" in both
    whisper = help_of("--model", "whisper")
    assert "(0 = the model's own window, 30 s; at most that) (--model hf, whisper)" in whisper
    assert "window by window (0 = whole clip)" not in whisper


def test_every_command_that_writes_one_output_takes_o_for_it_or_refuses_it_with_the_seed_meaning() -> None:
    from audiotune.cli import _nested
    from audiotune.cli.seed_flags import Refused

    checked = 0
    for parser in _nested(build_parser()):
        out = next((a for a in parser._actions if "--out" in a.option_strings), None)
        if out is None:
            continue
        short = parser._option_string_actions.get("-o")
        assert short is not None, parser.prog
        assert short is out or isinstance(short, Refused), parser.prog
        checked += 1
    assert checked >= 15
    assert build_parser().parse_args(["manifest", "audio", "-o", "m.csv"]).out == "m.csv"


def test_a_config_files_option_of_another_backbone_is_refused_as_its_flag_is(tmp_path: Path) -> None:
    """An option of another backbone in a file's model section would do nothing, as its flag would: refused, naming
    the file; an earlier release's file, which listed every backbone's options, still reads."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": {"model": "ecapa_tdnn", "mask_time_prob": 0.5, "fstride": 9}}))
    with pytest.raises(ValueError, match=re.escape(f"--config {path}: model: fstride (--model ssast), mask_time_prob "
                                                   "(--model hf): option(s) of another backbone than --model "
                                                   "ecapa_tdnn, which would do nothing: drop them")):
        parse("--config", str(path))
    path.write_text(yaml.safe_dump({"model": {"model": "ecapa_tdnn", "mask_time_prob": 0.5},
                                    "version": OWN_MEANINGS_VERSION - 1}))
    assert parse("--config", str(path)).model.model == "ecapa_tdnn"
