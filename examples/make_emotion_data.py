#!/usr/bin/env python
"""Lay out the shipped spoken-word clips as a small speech-emotion corpus with the emotion seed's fold files.

The speech-emotion seed (FT-w2v2-ser) reads a folder of 16 kHz WAV files and, per fold, a JSON split file
``{"Train": {utterance: emotion}, "Val": {}, "Test": {...}}`` (utterances relative to the audio folder; its
IEMOCAP recipe leaves one session out per fold and leaves ``Val`` empty). Here the 12 voices of
``examples/demo_data/audio`` become three sessions of four speakers, and four words stand for four emotions
(a made-up mapping, so that a model has something to learn): yes -> happy, no -> angry, up -> neutral,
down -> sad.

Output (``--out``)::

    Audio_16k/SesN/WORD_SPEAKER_TAKE.wav     the utterances (the demo clips' names)
    labels/fold{1,2,3}.json                  one fold per held-out session, "Val" empty
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

DEMO_AUDIO = Path(__file__).resolve().parent / "demo_data" / "audio"
EMOTIONS = {"yes": "happy", "no": "angry", "up": "neutral", "down": "sad"}
SESSIONS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write Audio_16k/ and labels/ into")
    parser.add_argument("--takes", type=int, default=3, help="utterances per speaker and word (1 to 3)")
    args = parser.parse_args()

    out = Path(args.out)
    voices = sorted({wav.stem.split("_")[1] for wav in DEMO_AUDIO.glob("*.wav")})
    session_of = {voice: f"Ses{index * SESSIONS // len(voices) + 1:02d}" for index, voice in enumerate(voices)}
    utterances: dict[str, str] = {}
    for wav in sorted(DEMO_AUDIO.glob("*.wav")):
        word, voice, take = wav.stem.split("_")
        if word not in EMOTIONS or int(take) >= args.takes:
            continue
        name = f"{session_of[voice]}/{wav.name}"
        (out / "Audio_16k" / session_of[voice]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wav, out / "Audio_16k" / name)
        utterances[name] = EMOTIONS[word]
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for number, session in enumerate(sorted(set(session_of.values())), start=1):
        split = {"Train": {n: e for n, e in utterances.items() if not n.startswith(session)}, "Val": {},
                 "Test": {n: e for n, e in utterances.items() if n.startswith(session)}}
        (out / "labels" / f"fold{number}.json").write_text(json.dumps(split, indent=1))
    print(f"{out / 'Audio_16k'}: {len(utterances)} utterances, {len(set(utterances.values()))} emotions; "
          f"{SESSIONS} folds (one session held out each) in {out / 'labels'}")


if __name__ == "__main__":
    main()
