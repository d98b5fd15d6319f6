"""What commands print: libraries' warnings and transformers' loading report only with -v."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from conftest import HF_TINY

from audiotune.cli.show import third_party_quiet


def warn_from(filename: str) -> None:
    warnings.warn_explicit("a note from below", FutureWarning, filename, 1, module="somewhere")


@pytest.mark.parametrize("verbose", [False, True])
def test_library_warnings_only_with_verbose(verbose: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")  # as a library may leave the filters: ours decide inside
        with third_party_quiet(verbose):
            warnings.simplefilter("always") if verbose else None
            warn_from("/site-packages/torch/utils/_pytree.py")
            warn_from("/site-packages/sklearn/metrics/_classification.py")
            warn_from("/src/audiotune/engine/train.py")
    files = [Path(w.filename).parts[-2] for w in caught]
    assert files == (["utils", "metrics", "engine"] if verbose else ["engine"])


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("verbose", [False, True])
def test_transformers_load_report_only_with_verbose(verbose: bool, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    # a CTC checkpoint: its head's weights are unexpected in the bare encoder
    transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**HF_TINY, vocab_size=8)).save_pretrained(tmp_path)
    collect = Collect()
    logging.getLogger("transformers").addHandler(collect)
    try:
        with third_party_quiet(verbose):
            transformers.AutoModel.from_pretrained(tmp_path)
    finally:
        logging.getLogger("transformers").removeHandler(collect)
    assert any("UNEXPECTED" in message for message in collect.messages) is verbose


@pytest.mark.slow
def test_a_command_whose_reader_went_away_stops_quietly_as_other_tools_do() -> None:
    import os
    import subprocess
    import sys

    source = Path(__file__).parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # `audiotune recipes | head -0`: the pipe's reader has left before the command writes (its whole output would
    # fit in the pipe's buffer, so a reader leaving after the first bytes could leave after the command ended)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        command = subprocess.Popen([sys.executable, "-m", "audiotune", "recipes"], stdout=writer,
                                   stderr=subprocess.PIPE, env=env)
    finally:
        os.close(writer)
    assert command.stderr is not None
    errors = command.stderr.read().decode()
    assert command.wait(timeout=120) == 141, errors  # as a shell reports a process ended by SIGPIPE
    assert errors == ""
    if Path("/dev/full").exists():  # a full disk is not a reader gone: still an error in one line
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "audiotune", "recipes"], stdout=full,
                                  stderr=subprocess.PIPE, env=env, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.startswith("audiotune recipes: error: "), done.stderr


def test_only_a_standard_stream_without_its_reader_counts_as_the_reader_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from audiotune.cli.show import reader_gone

    read_end, write_end = os.pipe()
    with open(write_end, "w") as writer:
        monkeypatch.setattr("sys.stdout", writer)
        assert not reader_gone(BrokenPipeError())  # its reader is still there: a pipe broken elsewhere
        os.close(read_end)
        assert reader_gone(BrokenPipeError())
        assert not reader_gone(OSError("disk full"))
