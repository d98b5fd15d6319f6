"""The README's commands run as typed: every fenced ```bash block of README.md, read when the test runs, is run
by bash in a folder outside the repository that holds tiny generated data under the names the README uses
(``recordings/``, ``lake/STUDY``, ``labels/``, ``IEMOCAP/``, ``facebook/wav2vec2-base``, ...), so a command
that the tool no longer accepts, or a file that a command does not write, fails here.

Two things differ from a user's shell, both stated once below: ``audiotune`` appends ``QUICK`` flags to the
README's own (the last value of a flag wins, so every README flag is still parsed and checked, but training
takes one epoch of a small model), and commands matching ``SKIP`` are not run (each with its reason, printed)."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import HF_TINY, SMALL_ECAPA, save_hf_checkpoint, tone, write_metadata_lake

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

# What a clone holds beside the user's own data: the example scripts and the shipped recipes.
CLONE_FOLDERS = ("examples",)  # recipes ship in the package: `--config NAME` needs no clone

# Commands that cannot run offline on one CPU, with why; everything else in a bash block runs.
SKIP = (
    (r"^make\b", "the Makefile's targets (they build .venv and run this suite; the demo is examples/demo.sh)"),
    (r"^(?!audiotune vertex (job|tune) ).*gs://",  # a job spec only names its bucket paths: those run
     "a bucket (tests/e2e/test_remote_commands.py runs these against the storage emulator)"),
    (r"^(curl|gcloud)\b", "the Google Cloud API and CLI"),
    (r"vertex results job\.json", "reads the description of a finished tuning job, which gcloud writes"),
    (r"^(torchrun|srun|MASTER_ADDR=|CUDA_VISIBLE_DEVICES=)|--devices [2-9]",
     "several GPUs, processes or machines"),
    (r"(^|\s)\.\.\.(\s|$)", "an outline: its `...` stands for flags shown elsewhere"),
    (r"^audiotune import |runs/seed_",
     "a seed system's saved files (tests/e2e/test_import*.py re-create each seed's save code and run these)"),
)

# Appended to the README's flags (per command, and for ECAPA-TDNN its width) so that training is a smoke run.
QUICK = {"train": ["-e", "1"], "cv": ["-e", "1"], "probe": ["-e", "1"], "sweep": ["-e", "1", "--trials", "2"],
         "pretrain": ["-e", "1", "--training_steps", "2"]}
QUICK_ECAPA = [flag for flag in SMALL_ECAPA if flag not in ("--features", "fbank", "--num_mel_bins", "24")]

WRAPPER = """#!{python}
# audiotune with the README test's QUICK flags appended (see tests/e2e/test_readme.py)
import runpy, sys, yaml
from audiotune.config import resolve_recipe
args = sys.argv[1:]
quick, quick_ecapa = {quick!r}, {quick_ecapa!r}
command = args[0] if args else ""
model = next((args[i + 1] for i in range(len(args) - 1, -1, -1) if args[i] == "--model"), None)
if model is None and "--config" in args:
    recipe = resolve_recipe(args[args.index("--config") + 1])  # a path or a shipped recipe's name
    model = (yaml.safe_load(open(recipe)).get("model") or {{}}).get("model")
extra = quick.get(command, []) + (quick_ecapa if command in ("train", "cv") and (model or "ecapa_tdnn") ==
                                   "ecapa_tdnn" else [])
sys.argv = ["audiotune", *args, *extra]
runpy.run_module("audiotune", run_name="__main__", alter_sys=True)
"""


def fenced_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """(line number, body) of every ```LANGUAGE block, indented ones (inside list items) too."""
    blocks, body, start = [], None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if body is None and stripped == f"```{language}":
            body, start, indent = [], number, len(line) - len(line.lstrip())
        elif body is not None and stripped == "```":
            blocks.append((start, "\n".join(body)))
            body = None
        elif body is not None:
            body.append(line[indent:])
    return blocks


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comment lines left out."""
    joined = re.sub(r"\\\n", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def skip_reason(command: str) -> str | None:
    return next((reason for pattern, reason in SKIP if re.search(pattern, command)), None)


def block_script(block: str) -> str:
    """The block as one bash script (its variables carry over), each command echoed before it runs."""
    lines = ["set -eo pipefail"]
    for command in commands(block):
        reason = skip_reason(command)
        lines.append(f"echo {shlex.quote(('skipped (' + reason + '): ' if reason else '$ ') + command)}")
        if not reason:
            lines.append(command)
    return "\n".join(lines) + "\n"


def _wav(path: Path, wave: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate)


def _hub_lookalikes(root: Path) -> None:
    """Tiny encoders saved under the hub ids the README names (a local folder wins over the hub)."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    # 12 layers as the base models (the README probes layer 6, its search space 0-12), a 320-sample frame hop
    # as theirs (so 10-s crops stay cheap), and wider than the README's feature masks (64)
    tiny = {**HF_TINY, "num_hidden_layers": 12, "hidden_size": 96, "conv_dim": (32, 32, 32, 32),
            "conv_kernel": (10, 8, 4, 4), "conv_stride": (5, 4, 4, 4), "feat_extract_norm": "layer",
            "do_stable_layer_norm": True, "mask_time_length": 2, "layerdrop": 0.0}
    quantized = {**tiny, "num_codevector_groups": 2, "num_codevectors_per_group": 8, "codevector_dim": 16,
                 "proj_codevector_dim": 16, "num_negatives": 5}
    save_hf_checkpoint(transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**quantized)),
                       root / "facebook/wav2vec2-base")
    save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**tiny)),
                       root / "facebook/wav2vec2-base-960h")
    save_hf_checkpoint(transformers.HubertModel(transformers.HubertConfig(**tiny)), root / "facebook/hubert-base-ls960")
    save_hf_checkpoint(transformers.WavLMModel(transformers.WavLMConfig(**tiny, num_buckets=32,
                                                                        max_bucket_distance=100)),
                       root / "microsoft/wavlm-base-plus")


def build_workspace(root: Path) -> Path:
    """Tiny data under every relative name the README's runnable commands read."""
    for name in CLONE_FOLDERS:
        (root / name).symlink_to(REPO / name)
    # spoken digits, file names as the Free Spoken Digit Dataset's: DIGIT_SPEAKER_TAKE.wav at 8 kHz
    speakers = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    for s, speaker in enumerate(speakers):
        for digit in range(3):
            for take in range(2):
                _wav(root / f"recordings/{digit}_{speaker}_{take}.wav",
                     tone(250 + 200 * digit + 15 * s, 0.7 + 0.05 * take, 8000, seed=100 * s + 10 * digit + take), 8000)
    _wav(root / "clip.wav", tone(440, 1.0, 16000), 16000)
    # the clinical seed layout: 150 speakers of one task
    write_metadata_lake(root / "lake/STUDY", [
        {"uid": f"u{number:03d}", "subject": f"s{number:03d}", "task": "Alternating Motion Rate",
         "encoding": "WAV", "sample_rate_hz": 8000,
         "features": [{"name": "slow rate", "score": number % 6}, {"name": "distorted Cs", "score": number % 3}]}
        for number in range(150)])
    # long recordings, an event table over them and a recording table
    for number in range(2):
        _wav(root / f"long/rec{number}.wav", np.concatenate([tone(300 + 300 * k, 1.0, 8000, seed=k) for k in range(9)]),
             8000)
    (root / "taps.csv").write_text("path,time,label\n" + "".join(
        f"long/rec{n}.wav,{t + 0.5},{'ab'[t % 2]}\n" for n in range(2) for t in range(1, 8)))
    (root / "recordings.csv").write_text("path,label\nlong/rec0.wav,a\nlong/rec1.wav,b\n")
    # speech-emotion fold files over an audio folder (utterance names relative to it); Val empty, as the seed's;
    # each fold trains on more than the 50 utterances that `train` draws for validation from a file without Val,
    # whose frames (50 per second) outnumber the 4096 clusters of `cluster` (P-TAPT clusters every fold's Train)
    names = {f"Ses0{s}/utt{k}.wav": ["neutral", "happy"][k % 2] for s in (1, 2) for k in range(52)}
    for number, (name, label) in enumerate(names.items()):
        _wav(root / "IEMOCAP" / name, tone(300 + 500 * (label == "happy"), 1.8, 16000, seed=number), 16000)
    (root / "labels").mkdir()
    for fold, held_out in ((1, "Ses01"), (2, "Ses02")):
        (root / f"labels/fold{fold}.json").write_text(json.dumps({
            "Train": {n: v for n, v in names.items() if not n.startswith(held_out)}, "Val": {},
            "Test": {n: v for n, v in names.items() if n.startswith(held_out)}}))
    # the search space the README shows, written as its YAML block says
    for _, body in fenced_blocks(README.read_text(), "yaml"):
        if body.startswith("# space.yaml"):
            (root / "space.yaml").write_text(body + "\n")
    _hub_lookalikes(root)
    bin_dir = root.parent / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "audiotune"
    wrapper.write_text(WRAPPER.format(python=sys.executable, quick=QUICK, quick_ecapa=QUICK_ECAPA))
    wrapper.chmod(0o755)
    return bin_dir


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[tuple[Path, dict]]:
    """One folder the blocks run in, in order; removed at the end unless a block failed (its runs weigh a
    gigabyte)."""
    folder = tmp_path_factory.mktemp("readme")
    root = folder / "work"
    root.mkdir()
    bin_dir = build_workspace(root)
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
           "AUDIOTUNE_CACHE": str(root.parent / "cache"), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    failed = request.session.testsfailed
    yield root, env
    if request.session.testsfailed == failed:
        shutil.rmtree(folder, ignore_errors=True)


BLOCKS = fenced_blocks(README.read_text(), "bash")


@pytest.mark.slow
@pytest.mark.xdist_group("readme")  # in order in one workspace (a block reads what an earlier one wrote): first
@pytest.mark.parametrize("start,block", BLOCKS, ids=[f"README.md:{start}" for start, _ in BLOCKS])
def test_readme_block_runs_as_typed(workspace: tuple[Path, dict], start: int, block: str) -> None:
    root, env = workspace
    done = subprocess.run(["bash", "-c", block_script(block)], cwd=root, env=env, capture_output=True, text=True)
    shown = done.stdout.splitlines()
    for line in shown:
        if line.startswith("skipped ("):
            print(f"README.md:{start}: {line}")
    ran = [line for line in shown if line.startswith("$ ")]
    assert done.returncode == 0, (f"README.md:{start}: `{ran[-1][2:] if ran else block}` failed "
                                  f"(exit {done.returncode}):\n{done.stderr[-3000:]}")


@pytest.mark.slow
def test_the_start_here_lines_of_help_run_on_the_demo_clips(workspace: tuple[Path, dict], tmp_path: Path) -> None:
    _, env = workspace
    shown = subprocess.run([sys.executable, "-m", "audiotune", "--help"], env=env, capture_output=True, text=True,
                           check=True).stdout
    lines = shown.split("start here:\n", 1)[1].splitlines()
    steps = [line.strip() for line in lines[:next(i for i, line in enumerate(lines) if not line.startswith("  "))]]
    assert steps[0].startswith("audiotune manifest AUDIO_DIR ")
    script = "\n".join(["set -eo pipefail", *steps]).replace("AUDIO_DIR", str(REPO / "examples/demo_data/audio"))
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run/evaluate/metrics.json").read_text())["data"]["n"] > 0


def test_every_readme_block_is_bash_and_says_what_it_skips() -> None:
    for start, block in BLOCKS:
        script = block_script(block)
        checked = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert checked.returncode == 0, f"README.md:{start}: not valid bash: {checked.stderr}"
        for command in commands(block):
            reason = skip_reason(command)
            assert (f"echo {shlex.quote('skipped (' + reason + '): ' + command)}" in script if reason
                    else f"\n{command}\n" in script)


def readme_command_lines() -> list[str]:
    """Every `audiotune ...` the README gives: the commands of its bash blocks (those skipped when run, too) and its
    inline code, each cut at a pipe, a `;` or a comment."""
    text = README.read_text()
    found = [command for _, block in BLOCKS for command in commands(block)]
    found += re.findall(r"`(audiotune [^`\n]+)`", text)
    lines = []
    for command in found:
        for part in re.split(r"\s(?:\||;|&&|#)\s", command):
            start = part.find("audiotune ")
            if start >= 0:
                lines.append(part[start:])
    return lines


def test_every_flag_the_readme_gives_a_command_is_one_that_command_takes() -> None:
    """The flags of every README command line (run or only shown) are options of that command, or of its
    subcommand, not refused: a renamed flag or one another command takes fails here, without running anything."""
    import argparse

    from audiotune.cli import build_parser
    from audiotune.cli.seed_flags import Refused

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})

    checked, wrong = 0, []
    for line in readme_command_lines():
        try:
            words = shlex.split(line)
        except ValueError:  # an unclosed quote of a shortened line
            words = line.split()
        parser, rest = build_parser(), words[1:]
        while rest and rest[0] in subcommands(parser):
            parser, rest = subcommands(parser)[rest[0]], rest[1:]
        if parser.prog == "audiotune":
            continue  # not a command line (`audiotune COMMAND --help` as prose)
        for word in rest:
            if word == "--":
                break  # the command a Vertex AI job runs: checked as its own line when the README gives it
            if re.fullmatch(r"-{1,2}[A-Za-z][\w-]*(=.*)?", word):
                action = parser._option_string_actions.get(word.partition("=")[0])
                checked += 1
                if action is None or isinstance(action, Refused):
                    wrong.append(f"{parser.prog} {word} ({'refused' if action else 'unknown'}): {line[:100]}")
    assert checked > 300 and not wrong, "\n".join(wrong)
