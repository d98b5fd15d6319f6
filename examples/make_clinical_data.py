#!/usr/bin/env python
"""Lay out the shipped spoken-word clips as a clinical-speech study in the seed layout.

The clinical seeds (naip-w2v2, naip-ssast, naip-ecapa-tdnn) read ``PREFIX/STUDY/UID/waveform.EXT`` with a
``metadata.json`` beside it (``encoding``, ``sample_rate_hz``, ``uid``, ``subject``, ``task`` and perceptual
``features`` as ``{name, score}`` lists on the 0-5 severity scale), split CSVs indexed by ``uid`` and a
``labels.txt``. This script copies clips of ``examples/demo_data/audio`` into that layout: each voice is a
subject, the first two takes of a word are the task "Alternating Motion Rate", the third "Sentences", and the
scores follow the word (a made-up rating, so that a model has something to learn):

    distorted Cs   4 for "down" and "right", 0 otherwise
    distorted V    3 for "no" and "up", 1 otherwise
    slow rate      5 for "yes", 0 otherwise

Output (``--out``)::

    lake/STUDY/UID/waveform.wav, metadata.json    the recordings (PREFIX = lake, STUDY = --study)
    splits/train.csv, val.csv, test.csv           uid-indexed split CSVs with the binary (0-1 -> 0, 2-5 -> 1)
                                                  scores, as the seeds' data_splits.py wrote them
    labels.txt                                    one classifier head: distorted Cs,distorted V
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
import soundfile as sf

DEMO_AUDIO = Path(__file__).resolve().parent / "demo_data" / "audio"
SCORES = {"distorted Cs": {"down": 4, "right": 4}, "distorted V": {"no": 3, "up": 3}, "slow rate": {"yes": 5}}
DEFAULT_SCORE = {"distorted Cs": 0, "distorted V": 1, "slow rate": 0}
TEST_SUBJECTS, VAL_SUBJECTS = ("kirk", "lena"), ("ivor",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write lake/, splits/ and labels.txt into")
    parser.add_argument("--study", default="study1", help="study folder under lake/")
    args = parser.parse_args()

    out = Path(args.out)
    study = out / "lake" / args.study
    rows = []
    for wav in sorted(DEMO_AUDIO.glob("*.wav")):
        word, subject, take = wav.stem.split("_")
        uid = f"{subject}{word}{take}"
        task = "Sentences" if take == "2" else "Alternating Motion Rate"
        scores = {name: SCORES[name].get(word, DEFAULT_SCORE[name]) for name in SCORES}
        folder = study / uid
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wav, folder / "waveform.wav")
        metadata = {"uid": uid, "subject": subject, "task": task, "encoding": "WAV",
                    "sample_rate_hz": sf.info(wav).samplerate,
                    "features": [{"name": name, "score": score} for name, score in scores.items()]}
        (folder / "metadata.json").write_text(json.dumps(metadata, indent=1))
        rows.append({"uid": uid, "subject": subject, "task": task,
                     **{name: int(score >= 2) for name, score in scores.items()}})

    table = pd.DataFrame(rows).set_index("uid")
    splits = out / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    parts = {"test": table.subject.isin(TEST_SUBJECTS), "val": table.subject.isin(VAL_SUBJECTS)}
    parts["train"] = ~(parts["test"] | parts["val"])
    for name, rows_of in parts.items():
        table[rows_of].to_csv(splits / f"{name}.csv")
    (out / "labels.txt").write_text("distorted Cs,distorted V\n")
    print(f"{study}: {len(table)} recordings of {table.subject.nunique()} subjects, "
          f"{', '.join(f'{name} {int(rows_of.sum())}' for name, rows_of in parts.items())} in {splits}")


if __name__ == "__main__":
    main()
