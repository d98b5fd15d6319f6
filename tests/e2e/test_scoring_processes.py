"""evaluate and extract over several processes: `--accelerator cpu --devices 2` (gloo) writes what one process
writes, in input order, metrics over all rows, with 7 rows shared unevenly between the 2 processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import small_train_args

from audiotune.cli import main
from audiotune.outputs import METRICS_FILE, PREDICTIONS_FILE, SKIPPED_FILE
from audiotune.partials import PARTIAL_SUFFIX

TWO_PROCESSES = ("--accelerator", "cpu", "--devices", "2")


def _audiotune(*args: str) -> subprocess.CompletedProcess:
    """``python -m audiotune ARGS`` as a user starts it (Lightning's launcher starts rank 1 by running it again)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "audiotune", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def uneven(trained_run: dict) -> dict:
    """A split directory of 5 and 7 rows (odd counts: 3 + 2 and 4 + 3 rows for the 2 processes), each in an order
    that is neither sorted by uid nor by length, with 2 or 3 clips of each subject."""
    table = trained_run["table"]
    folder = trained_run["root"] / "uneven"
    folder.mkdir()
    uids = {"val": ["eve1", "dan3", "eve2", "dan0", "eve3"],  # the order of a split directory: train, val, test
            "test": ["cat2", "ann3", "bob1", "ann0", "cat0", "bob3", "ann2"]}
    for split, rows in uids.items():
        table.loc[rows].to_csv(folder / f"{split}.csv")
    return {**trained_run, "uneven": folder, "uids": uids}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(PARTIAL_SUFFIX)]


def _in_input_order(table: pd.DataFrame, uids: dict[str, list[str]]) -> bool:
    return table.groupby("split", sort=False)["uid"].agg(list).to_dict() == uids and \
        table["split"].drop_duplicates().tolist() == list(uids)


@pytest.mark.slow  # two command lines, one of them two processes: about a minute on 2 busy CPU cores
def test_two_processes_extract_the_rows_of_one_in_input_order(uneven: dict) -> None:
    root, run, data = uneven["root"], str(uneven["run"]), str(uneven["uneven"])
    one, two = root / "extract1.parquet", root / "extract2.parquet"
    assert main(["extract", "--run", run, "-d", data, "--out", str(one), "-bs", "2"]) == 0
    done = _audiotune("extract", "--run", run, "-d", data, "--out", str(two), "-bs", "2", *TWO_PROCESSES)
    assert done.stdout.count("embeddings:") == 1  # only rank 0 reports, its progress too
    assert done.stderr.count("extract test: done") == 1 and "Initializing distributed" not in done.stderr
    first, second = pd.read_parquet(one), pd.read_parquet(two)
    assert list(second.columns) == list(first.columns) == ["uid", "split", "embedding"]
    assert second[["split", "uid"]].equals(first[["split", "uid"]])  # every row once
    assert _in_input_order(first, uneven["uids"])  # split after split, each in its table's order
    assert np.allclose(np.stack(first["embedding"]), np.stack(second["embedding"]), atol=1e-5)
    assert not _leftovers(root)


@pytest.mark.slow
def test_two_processes_evaluate_as_one_with_metrics_over_all_rows(uneven: dict) -> None:
    root, run, data = uneven["root"], str(uneven["run"]), str(uneven["uneven"])
    one, two = root / "evaluate1", root / "evaluate2"
    assert main(["evaluate", "--run", run, "-d", data, "-o", str(one), "-bs", "2"]) == 0
    done = _audiotune("evaluate", "--run", run, "-d", data, "-o", str(two), "-bs", "2", *TWO_PROCESSES)
    assert done.stdout.count('"test"') == 1  # the summary, printed once
    m1, m2 = (json.loads((folder / METRICS_FILE).read_text()) for folder in (one, two))
    assert m2["test"]["n"] == m1["test"]["n"] == 7 and m2["val"]["n"] == 5
    assert json.dumps(m2, sort_keys=True) == json.dumps(m1, sort_keys=True)
    p1, p2 = (pd.read_parquet(folder / PREDICTIONS_FILE) for folder in (one, two))
    assert list(p2.columns) == list(p1.columns) and _in_input_order(p2, uneven["uids"])
    scores = [c for c in p1.columns if c.startswith("score:")]
    assert np.allclose(p1[scores].to_numpy(float), p2[scores].to_numpy(float), atol=1e-5)
    others = [c for c in p1.columns if c not in scores]
    assert p2[others].equals(p1[others])
    assert sorted(p.name for p in two.rglob("*")) == sorted(p.name for p in one.rglob("*"))
    assert not _leftovers(root)


@pytest.mark.slow
def test_two_processes_adapt_batchnorm_on_whole_groups(uneven: dict) -> None:
    """``--adapt_bn subject``: each process scores whole subjects, each adapted on all of its clips, as one process
    adapts them."""
    root, run, data = uneven["root"], str(uneven["run"]), str(uneven["uneven"])
    one, two = root / "adapted1", root / "adapted2"
    adapt = ("--adapt_bn", "subject", "-bs", "2")
    assert main(["evaluate", "--run", run, "-d", data, "-o", str(one), *adapt]) == 0
    _audiotune("evaluate", "--run", run, "-d", data, "-o", str(two), *adapt, *TWO_PROCESSES)
    m1, m2 = (json.loads((folder / METRICS_FILE).read_text()) for folder in (one, two))
    assert m2["test"]["batchnorm_adapted"] == m1["test"]["batchnorm_adapted"] == {"on": "subject", "groups": 3,
                                                                                   "clips": 7}
    assert json.dumps(m2, sort_keys=True) == json.dumps(m1, sort_keys=True)
    p1, p2 = (pd.read_parquet(folder / PREDICTIONS_FILE) for folder in (one, two))
    assert _in_input_order(p2, uneven["uids"])
    scores = [c for c in p1.columns if c.startswith("score:")]
    assert np.allclose(p1[scores].to_numpy(float), p2[scores].to_numpy(float), atol=1e-5)


@pytest.mark.slow
def test_two_processes_score_a_frozen_encoder_through_the_feature_cache(uneven: dict) -> None:
    """Heads on a frozen encoder: each process encodes its rows into the shared feature cache and scores them from
    it; the result is the one-process result."""
    root = uneven["root"]
    run = root / "frozen"
    assert main(small_train_args(uneven, run, "--freeze", "--cache_dir", str(root / "cache"))) == 0
    one, two = root / "frozen1", root / "frozen2"
    assert main(["evaluate", "--run", str(run), "-d", str(uneven["uneven"]), "-o", str(one)]) == 0
    _audiotune("evaluate", "--run", str(run), "-d", str(uneven["uneven"]), "-o", str(two), *TWO_PROCESSES)
    m1, m2 = (json.loads((folder / METRICS_FILE).read_text()) for folder in (one, two))
    assert json.dumps(m2, sort_keys=True) == json.dumps(m1, sort_keys=True) and m2["test"]["n"] == 7
    p1, p2 = (pd.read_parquet(folder / PREDICTIONS_FILE) for folder in (one, two))
    scores = [c for c in p1.columns if c.startswith("score:")]
    assert p2["uid"].equals(p1["uid"]) and np.allclose(p1[scores].to_numpy(float), p2[scores].to_numpy(float),
                                                        atol=1e-5)


def _with_a_silent_clip(uneven: dict, folder: Path) -> Path:
    """The split directory of ``uneven`` with an all-zero clip, zed0, in the middle of the test split's rows."""
    clip = uneven["prefix"] / "zed0"
    clip.mkdir(exist_ok=True)
    sf.write(clip / "waveform.wav", np.zeros(4000, dtype=np.float32), 8000)
    (clip / "metadata.json").write_text(json.dumps({"encoding": "WAV", "sample_rate_hz": 8000}))
    data = folder / "with_silence"
    data.mkdir()
    table = pd.concat([uneven["table"], pd.DataFrame([{"subject": "zed", "pitch": "low", "loud": 0, "long": 1}],
                                                     index=pd.Index(["zed0"], name="uid"))])
    for split, uids in uneven["uids"].items():
        table.loc[uids[:3] + ["zed0"] * (split == "test") + uids[3:]].to_csv(data / f"{split}.csv")
    return data


@pytest.mark.slow
def test_two_processes_report_unusable_audio_once(uneven: dict, tmp_path: Path) -> None:
    """Without --on_error skip, an unusable clip fails the command before anything is written; every process
    finds it, rank 0 alone reports it."""
    data, out = _with_a_silent_clip(uneven, tmp_path), tmp_path / "evaluated"
    env = {key: value for key, value in os.environ.items() if key not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    done = subprocess.run([sys.executable, "-m", "audiotune", "evaluate", "--run", str(uneven["run"]), "-d",
                           str(data), "-o", str(out), *TWO_PROCESSES], env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.count("error: 1 audio file(s) cannot be used") == 1 and "zed0/waveform.wav: audio is all " \
        "zeros" in done.stderr and "Traceback" not in done.stderr
    assert not (out / METRICS_FILE).exists() and not _leftovers(tmp_path)


COUNTING = """
import os
import sys
from audiotune.data import checked_audio
from audiotune.cli import main

def counted(path, *args, **kwargs):  # one line per clip checked, by whichever process checks it
    with open(os.environ["CHECKED_CLIPS"], "a") as log:
        log.write(f"{os.getpid()} {path}\\n")
    return checked(path, *args, **kwargs)

checked, checked_audio.check_clip = checked_audio.check_clip, counted
sys.exit(main())
"""


@pytest.mark.slow
def test_two_processes_check_each_clip_once_and_list_the_skipped_rows_once(uneven: dict, tmp_path: Path) -> None:
    """An all-zero clip in the test split: the 2-process runs skip it as the 1-process runs do and write the same
    skip list once; the processes share the checks, each clip checked by one of them (Lightning's launcher starts
    rank 1 by running the same script again, counter included)."""
    run, prefix, data = str(uneven["run"]), uneven["prefix"], _with_a_silent_clip(uneven, tmp_path)
    skip = ("--on_error", "skip", "-bs", "2")
    checked = tmp_path / "checked.txt"
    counting = tmp_path / "counting.py"
    counting.write_text(COUNTING)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CHECKED_CLIPS": str(checked)}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)

    def two_processes(*args: str) -> subprocess.CompletedProcess:
        checked.unlink(missing_ok=True)
        fresh = tempfile.mkdtemp(dir=tmp_path)  # no record of earlier checks: every clip is checked
        done = subprocess.run([sys.executable, str(counting), *args, *skip, *TWO_PROCESSES],
                              env={**env, "AUDIOTUNE_CACHE": fresh}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    one, two = tmp_path / "extract1.parquet", tmp_path / "extract2.parquet"
    assert main(["extract", "--run", run, "-d", str(data), "--out", str(one), *skip]) == 0
    done = two_processes("extract", "--run", run, "-d", str(data), "--out", str(two))
    assert done.stderr.count("row(s) skipped") == 1  # rank 0 reports the list, once
    lines = checked.read_text().split()
    processes, paths = set(lines[0::2]), lines[1::2]
    assert len(processes) == 2  # both processes checked clips ...
    listed = [*uneven["uids"]["val"], *uneven["uids"]["test"], "zed0"]
    assert sorted(paths) == sorted(str(prefix / uid / "waveform.wav") for uid in listed)  # ... each clip once
    skipped = [pd.read_csv(path.with_name(path.stem + ".skipped.csv")) for path in (one, two)]
    assert skipped[1].equals(skipped[0]) and skipped[0]["uid"].tolist() == ["zed0"]
    assert "all zeros" in skipped[0]["reason"][0]
    assert pd.read_parquet(two)[["split", "uid"]].equals(pd.read_parquet(one)[["split", "uid"]])
    assert "zed0" not in set(pd.read_parquet(two)["uid"])

    first, second = tmp_path / "evaluate1", tmp_path / "evaluate2"
    assert main(["evaluate", "--run", run, "-d", str(data), "-o", str(first), *skip]) == 0
    two_processes("evaluate", "--run", run, "-d", str(data), "-o", str(second))
    assert sorted(checked.read_text().split()[1::2]) == sorted(paths)
    assert (second / SKIPPED_FILE).read_text() == (first / SKIPPED_FILE).read_text()
    m1, m2 = (json.loads((folder / METRICS_FILE).read_text()) for folder in (first, second))
    assert json.dumps(m2, sort_keys=True) == json.dumps(m1, sort_keys=True) and m2["test"]["n"] == 7
    assert sorted(p.name for p in second.rglob("*")) == sorted(p.name for p in first.rglob("*"))
    assert not _leftovers(tmp_path)


FAILING = """
import builtins
import importlib
import os
import signal
import sys
import time
from audiotune.cli import main

module, _, attribute = os.environ["FAILING_AT"].partition(":")
*owners, name = attribute.split(".")
owner = importlib.import_module(module)
for part in owners:
    owner = getattr(owner, part)
original = getattr(owner, name)
killed = os.environ["FAILING_WITH"].startswith("SIG")  # SIGKILL, SIGTERM: the process is sent that signal
error = None if killed else getattr(builtins, os.environ["FAILING_WITH"])(os.environ["FAILING_MESSAGE"])

def failing(*args, **kwargs):
    if killed:
        os.kill(os.getpid(), getattr(signal, os.environ["FAILING_WITH"]))
        time.sleep(60)  # a signal Python handles is raised in this sleep
    raise error

def slowed(*args, **kwargs):
    time.sleep(2)
    return original(*args, **kwargs)

# Lightning's launcher starts rank 1 by running this script again with LOCAL_RANK=1
if int(os.environ.get("LOCAL_RANK", "0")) == int(os.environ["FAILING_RANK"]):
    setattr(owner, name, failing)
elif os.environ.get("OTHERS_SLOWED"):  # the other process takes 2 s over each call
    setattr(owner, name, slowed)
sys.exit(main())
"""

# where one process fails: before the audio is checked (reading a table, building the model) or while scoring
FAILURES = {
    "table": ("audiotune.data.layout:read_table", "OSError", "split/test.csv: connection reset by peer"),
    "model": ("audiotune.models.checkpoint:build_classifier", "MemoryError", "out of memory building the model"),
    "scoring": ("audiotune.models.classifier:Classifier.forward_batch", "RuntimeError", "out of memory in a batch"),
    "embedding": ("audiotune.models.classifier:Classifier.extract_embedding", "RuntimeError",
                  "out of memory in a batch"),
    # before the process group exists: the run's config.yaml says how many processes to start
    "config": ("audiotune.engine.evaluate:run_config", "OSError", "run/config.yaml: connection reset by peer"),
    "killed": ("audiotune.models.classifier:Classifier.forward_batch", "SIGKILL", ""),  # the system's OOM killer
    "stopped": ("audiotune.models.classifier:Classifier.forward_batch", "SIGTERM", ""),  # torchrun's agent
}
LIMIT_S = 120  # far below the 30 minutes a process waits in a gather for one that never comes


def _failing(tmp_path: Path, failure: str, rank: int, *args: str,
             others_slowed: bool = False) -> tuple[subprocess.CompletedProcess, float]:
    """``audiotune ARGS`` with ``FAILURES[failure]`` raised in process ``rank`` only (``others_slowed``: the same
    call takes 2 s in the other process), and its wall time."""
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    at, error, message = FAILURES[failure]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAILING_RANK": str(rank), "FAILING_AT": at,
           "FAILING_WITH": error, "FAILING_MESSAGE": message, "OTHERS_SLOWED": "1" if others_slowed else ""}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True,
                          timeout=LIMIT_S)
    return done, time.monotonic() - start


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr that report an error: audiotune's own, or the start of a Python traceback (torch's own
    log lines, such as a peer closing its connection at exit, are not the command's report)."""
    return [line for line in done.stderr.splitlines() if line.startswith(("audiotune ", "Traceback"))]


@pytest.mark.slow  # one failing two-process command each: about 20 s on 2 busy CPU cores
@pytest.mark.parametrize(("command", "failure"), [("extract", "table"), ("evaluate", "model"),
                                                  ("extract", "embedding"), ("evaluate", "scoring")])
def test_a_failure_in_one_process_ends_both_at_once_with_its_error(uneven: dict, tmp_path: Path, command: str,
                                                                   failure: str) -> None:
    """Process 1 alone fails (reading a table or building the model before the audio is checked, or scoring a
    batch): both processes end within seconds, rank 0 reports the error of process 1 on one line with the
    command's error status, and nothing is left of the output."""
    out = tmp_path / ("out.parquet" if command == "extract" else "evaluated")
    done, seconds = _failing(tmp_path, failure, 1, command, "--run", str(uneven["run"]), "-d", str(uneven["uneven"]),
                             "--out" if command == "extract" else "-o", str(out), "-bs", "2", *TWO_PROCESSES)
    assert seconds < LIMIT_S and done.returncode == 2, done.stderr[-3000:]
    error, message = FAILURES[failure][1:]
    assert _error_lines(done) == [f"audiotune {command}: error: ShardError: process 1 of 2 failed, so nothing was "
                                  f"written: {error}: {message} (rerun with -v for the traceback)"], done.stderr
    assert "Traceback" not in done.stderr and "Killed" not in done.stderr
    assert not out.exists() and not _leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failing.py"]


@pytest.mark.slow
def test_a_failure_in_rank_zero_alone_is_reported_as_one_process_reports_it(uneven: dict, tmp_path: Path) -> None:
    """Rank 0 alone fails scoring while process 1 scores its share: the command ends as one process failing the
    same way does (the same line, the same status), and process 1 ends with it."""
    args = ("evaluate", "--run", str(uneven["run"]), "-d", str(uneven["uneven"]), "-bs", "2")
    alone, _ = _failing(tmp_path, "scoring", 0, *args, "-o", str(tmp_path / "alone"))
    done, seconds = _failing(tmp_path, "scoring", 0, *args, "-o", str(tmp_path / "two"), *TWO_PROCESSES)
    assert seconds < LIMIT_S and done.returncode == alone.returncode == 2, done.stderr[-3000:]
    assert _error_lines(done) == _error_lines(alone) == ["audiotune evaluate: error: RuntimeError: out of memory in "
                                                         "a batch (rerun with -v for the traceback)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failing.py"]


@pytest.mark.slow
def test_a_process_still_scoring_stops_when_another_fails(uneven: dict, tmp_path: Path) -> None:
    """Process 1 fails at its first batch while rank 0 takes 2 s a batch over its 7 rows (one a batch): rank 0
    stops within a batch or two instead of first scoring its whole share, and reports the failure."""
    done, _ = _failing(tmp_path, "scoring", 1, "evaluate", "--run", str(uneven["run"]), "-d", str(uneven["uneven"]),
                       "-o", str(tmp_path / "evaluated"), "-bs", "1", *TWO_PROCESSES, others_slowed=True)
    assert done.returncode == 2, done.stderr[-3000:]
    assert _error_lines(done) == ["audiotune evaluate: error: ShardError: process 1 of 2 failed, so nothing was "
                                  "written: RuntimeError: out of memory in a batch (rerun with -v for the traceback)"]
    assert "evaluate val: done" not in done.stderr and "evaluate test: done" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failing.py"]


@pytest.mark.slow  # two failing two-process commands and one that succeeds: about a minute on 2 busy CPU cores
@pytest.mark.parametrize("failure", ["config", "killed"])
def test_a_process_lost_outside_the_gathers_leaves_no_evaluation_folder(uneven: dict, tmp_path: Path,
                                                                        failure: str) -> None:
    """Process 1 fails before the process group exists, or is killed while scoring: Lightning's launcher then kills
    rank 0 too (SIGKILL; when it has not learned of it at a gather first), so nothing of rank 0 cleans up. The
    evaluation's folder is made only once every row is scored, so none is left; the parts' folder a killed rank 0
    leaves is removed by the next evaluation, which writes the whole evaluation."""
    out = tmp_path / "evaluated"
    args = ("evaluate", "--run", str(uneven["run"]), "-d", str(uneven["uneven"]), "-o", str(out), "-bs", "2",
            *TWO_PROCESSES)
    done, seconds = _failing(tmp_path, failure, 1, *args)
    assert seconds < LIMIT_S and done.returncode != 0, done.stderr[-3000:]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(PARTIAL_SUFFIX)) == ["failing.py"]
    if failure == "config":
        assert "error: run/config.yaml: connection reset by peer" in done.stderr and not _leftovers(tmp_path)
    _audiotune(*args[:-4])
    assert json.loads((out / METRICS_FILE).read_text())["test"]["n"] == 7 and not _leftovers(tmp_path)


@pytest.mark.slow
def test_rank_zero_stopped_by_sigterm_cleans_up_and_ends_the_other(uneven: dict, tmp_path: Path) -> None:
    """SIGTERM to rank 0 while it scores (torchrun's agent stopping the processes, a scheduler's time limit): it
    ends as after Ctrl-C, removing what it made, and process 1 ends with it."""
    done, seconds = _failing(tmp_path, "stopped", 0, "evaluate", "--run", str(uneven["run"]), "-d",
                             str(uneven["uneven"]), "-o", str(tmp_path / "evaluated"), "-bs", "2", *TWO_PROCESSES)
    assert seconds < LIMIT_S and done.returncode == 143, done.stderr[-3000:]  # SIGTERM's status, as one process
    assert _error_lines(done) == ["audiotune evaluate: interrupted by SIGTERM; outputs not finished were not "
                                  "written; run the command again"], done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failing.py"]

