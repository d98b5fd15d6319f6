"""How FSDD's speakers' words begin and end, and FSDD folds with more training voices.

Two parts, both on ``../shared/data`` (the Free Spoken Digit Dataset and speech-commands-mini):

- the default prints, for each speaker and each of ``--digits``, the median over the speaker's 50 clips of:
  the clip's duration; the share of the first 40 ms's power above 2 kHz (a plosive's burst or a fricative at
  the onset: high; a vowel: low); the RMS of the first and of the last 40 ms relative to the clip's RMS (a word
  whose onset or ending was cut by the silence trimmer starts or ends loud).
- ``--extra_voices OUT`` writes FSDD leave-one-speaker-out folds as split folders
  ``OUT/fold_K/{train,test}.csv`` (no validation; FSDD's manifest beside them), where every fold's training
  split also holds the digit words of speech-commands-mini (10 per digit, 22 speakers), resampled to 8 kHz as
  FSDD, trimmed where the 10 ms frame level is 30 dB below the clip's loudest frame, peak-normalised,
  ``--copies`` times each. Run them with ``audiotune cv -d OUT --val_group none ...``.

    python benchmarks/fsdd_word_edges.py --digits 2 4 6 8
    python benchmarks/fsdd_word_edges.py --extra_voices /tmp/fsdd_sc --copies 3
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from scipy import signal

from audiotune.data.manifest import build_manifest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FSDD = SHARED / "fsdd" / "recordings"
COMMANDS = SHARED / "speech-commands-mini" / "speech_commands_v0.01"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
EDGE_S = 0.04
FSDD_PATTERN = r"(?P<digit>\d)_(?P<subject>[a-z]+)_\d+\.wav"


def edges(path: Path) -> tuple[float, float, float, float]:
    """Duration, onset power share above 2 kHz, onset and ending RMS relative to the clip's."""
    wave, rate = sf.read(path, dtype="float64")
    n = int(EDGE_S * rate)
    freqs, power = signal.welch(wave[:n], rate, nperseg=min(128, n))
    rms = np.sqrt(np.mean(wave**2)) + 1e-12
    return (len(wave) / rate, power[freqs > 2000].sum() / (power.sum() + 1e-20),
            np.sqrt(np.mean(wave[:n] ** 2)) / rms, np.sqrt(np.mean(wave[-n:] ** 2)) / rms)


def fsdd_table(folder: Path) -> pd.DataFrame:
    """FSDD's manifest (``audiotune manifest`` with the digit and speaker from the file names), written to
    ``folder``, indexed by uid, with absolute paths."""
    table, _ = build_manifest(FSDD, folder / "fsdd_manifest.csv", pattern=FSDD_PATTERN)
    table["path"] = [str((folder / path).resolve()) for path in table["path"]]
    return table.astype({"digit": int}).set_index("uid")


def print_edges(digits: list[int]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        table = fsdd_table(Path(folder))
    print(f"{'digit':>5} {'speaker':<9} {'duration s':>10} {'onset >2 kHz':>12} {'onset level':>11} "
          f"{'end level':>9}")
    for digit in digits:
        for speaker, clips in table[table["digit"] == digit].groupby("subject"):
            values = np.median([edges(Path(p)) for p in clips["path"]], axis=0)
            print(f"{digit:>5} {speaker:<9} {values[0]:>10.2f} {values[1]:>12.2f} {values[2]:>11.2f} "
                  f"{values[3]:>9.2f}")


def trimmed(wave: np.ndarray, rate: int) -> np.ndarray:
    """The clip between its first and last 10 ms frame within 30 dB of its loudest (20 ms kept around)."""
    frame = rate // 100
    levels = np.array([np.sqrt(np.mean(wave[i:i + frame] ** 2)) + 1e-9
                       for i in range(0, len(wave) - frame + 1, frame)])
    loud = np.flatnonzero(20 * np.log10(levels / levels.max()) > -30)
    start, stop = max(loud[0] - 2, 0) * frame, min(loud[-1] + 3, len(levels)) * frame
    return wave[start:stop]


def write_extra_voices(out: Path, copies: int) -> None:
    audio = out / "speech_commands_8k"
    audio.mkdir(parents=True, exist_ok=True)
    extra = []
    for digit, word in enumerate(WORDS):
        for path in sorted((COMMANDS / word).glob("*.wav")):
            wave, rate = sf.read(path, dtype="float32")
            clip = trimmed(soxr.resample(wave, rate, 8000), 8000)
            target = audio / f"{word}_{path.stem}.wav"
            sf.write(target, 0.5 * clip / max(float(np.abs(clip).max()), 1e-4), 8000, subtype="PCM_16")
            speaker = path.stem.split("_")[0]
            extra += [{"uid": f"{word}_{path.stem}_copy{k}", "path": str(target), "digit": digit,
                       "subject": f"commands_{speaker}"} for k in range(copies)]
    if not extra:
        raise SystemExit(f"{COMMANDS}: no digit words")
    extra_table = pd.DataFrame(extra).set_index("uid")
    table = fsdd_table(out)
    for k, speaker in enumerate(sorted(table["subject"].unique()), start=1):
        fold = out / f"fold_{k}"
        fold.mkdir(exist_ok=True)
        pd.concat([table[table["subject"] != speaker], extra_table]).to_csv(fold / "train.csv", index_label="uid")
        table[table["subject"] == speaker].to_csv(fold / "test.csv", index_label="uid")
        print(f"{fold}: test {speaker}, {len(extra_table)} extra training clips")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--extra_voices", type=Path, help="write fold folders with speech-commands digits here")
    parser.add_argument("--copies", type=int, default=3, help="each extra clip this many times per epoch")
    args = parser.parse_args()
    if args.extra_voices:
        write_extra_voices(args.extra_voices, args.copies)
    else:
        print_edges(args.digits)


if __name__ == "__main__":
    main()
