"""The check before a run with the record of checked audio against decoding every clip for it, side by side.

Every command that reads a table checks its audio first (``scan_audio``: headers, spans, and each clip streamed
to find empty, all-zero and non-finite audio), which decodes every compressed file once before the first batch.
The record (``data/checked_audio.py``, under the cache folder) keeps what the check found for usable rows, so the
next command over the same files (``evaluate`` after ``train``, a fold of ``cv``, a trial of ``sweep``) reads only
their sizes and times. Three kinds of check on the same table, alternating ``--repeats`` times:

- every clip decoded: ``scan_audio`` without a record (what every command did before the record);
- first check: with an empty record (every clip decoded, the record written);
- recorded: with the record an earlier check wrote (no clip decoded).

The clips are 5-s 44.1 kHz OGG/Vorbis files (``--channels`` channels) made at run time from the shipped demo
speech (``benchmarks/audio_store.py: make_clips``), checked with the settings of ECAPA-style training (16 kHz,
5-s crop). After an untimed check (the files in the page cache), each kind's median is reported; the three must
give the same rows and lengths.

    python benchmarks/checked_audio.py
    python benchmarks/checked_audio.py --clips 400 --channels 2 --repeats 5
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
from audio_store import inputs_of, make_clips, make_config  # benchmarks/audio_store.py
from data_pipeline import machine  # benchmarks/data_pipeline.py

from audiotune.data.checked_audio import CheckRecord, scan_audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="checked_audio_"))
    try:
        paths = make_clips(work / "clips", args.clips, args.channels, 0)
        table = pd.DataFrame({"uid": [p.stem for p in paths], "path": [str(p) for p in paths]}).set_index("uid")
        spec = inputs_of(make_config(0, 8, 0, None)).audio(train=True)
        expected = scan_audio(table, spec, "train")  # untimed: the files in the page cache
        filled = work / "filled"
        scan_audio(table, spec, "train", record=CheckRecord(filled, spec))
        seconds: dict[str, list[float]] = {"every clip decoded": [], "first check": [], "recorded": []}
        for repeat in range(args.repeats):
            for kind in seconds:
                root = filled if kind == "recorded" else work / f"empty_{repeat}"
                record = None if kind == "every clip decoded" else CheckRecord(root, spec)
                start = time.perf_counter()
                kept, failures = scan_audio(table, spec, "train", record=record)
                seconds[kind].append(time.perf_counter() - start)
                if not (kept.equals(expected[0]) and failures.equals(expected[1])):
                    raise SystemExit(f"{kind}: other rows or lengths than checking every clip")
        medians = {kind: statistics.median(values) for kind, values in seconds.items()}
        print(f"{args.clips} OGG clips, 5 s at 44.1 kHz, {args.channels} channel(s); {machine()}")
        print("| check | median s | clips/s |\n| --- | ---: | ---: |")
        for kind, value in medians.items():
            print(f"| {kind} | {value:.3f} | {args.clips / value:.0f} |")
        print(f"recorded: {medians['every clip decoded'] / medians['recorded']:.1f}x as fast as decoding every clip; "
              f"first check {medians['first check'] / medians['every clip decoded']:.2f}x its time; same rows and "
              "lengths")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
