#!/usr/bin/env python
"""Render the small spoken-word demo dataset shipped in ``examples/demo_data``.

The clips are synthesised with the espeak-ng speech synthesiser, which must be
installed and on ``PATH`` (Debian/Ubuntu: ``apt-get install espeak-ng``; this
script was run with espeak-ng 1.51). Nothing is downloaded.

Each "speaker" is one espeak-ng English voice combined with a voice variant
and its own base pitch and speed. Every take of a word gets a small random
pitch/speed jitter and a little background noise, so no two takes are the
same. Each clip is resampled to 16 kHz mono, has its leading and trailing
silence trimmed (a short margin is kept), is mixed with noise, is
peak-normalised and is written as 16-bit PCM WAV::

    <out>/audio/{word}_{speaker}_{take}.wav      e.g. audio/yes_alba_0.wav

Words and speaker ids are lowercase letters only and takes are numbered from
0, so the label (word) and the group (speaker) can be read from the file name
by splitting on ``_``. The script also writes ``<out>/ATTRIBUTION.md``.

With the same seed and the same espeak-ng version, the output is the same.

Usage::

    python examples/make_demo_data.py                     # -> examples/demo_data
    python examples/make_demo_data.py --out /tmp/demo_data
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

WORDS: tuple[str, ...] = ("yes", "no", "up", "down", "right")
"""Words to render (lowercase letters only); these are the class labels."""

TARGET_SR = 16_000
"""Output sample rate in Hz."""

PEAK = 0.7
"""Peak amplitude after normalisation."""

MARGIN_S = 0.05
"""Silence kept before and after the trimmed word, in seconds."""

TRIM_DB = -35.0
"""Frames quieter than this (dB relative to the loudest frame) count as silence."""

PITCH_JITTER = 6
"""Maximum change to the speaker's espeak-ng pitch (0-99 scale) per take."""

SPEED_JITTER = 0.08
"""Maximum relative change to the speaker's speed (words per minute) per take."""

SNR_DB_RANGE = (22.0, 38.0)
"""Signal-to-noise ratio of the added noise, drawn per take, in dB."""


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an espeak-ng voice, a variant, a pitch and a speed."""

    name: str
    voice: str
    variant: str
    pitch: int
    speed: int

    @property
    def espeak_voice(self) -> str:
        """The voice name as given to ``espeak-ng -v``."""
        return f"{self.voice}+{self.variant}"


SPEAKERS: tuple[Speaker, ...] = (
    Speaker("alba", "en-gb-scotland", "f2", 60, 160),
    Speaker("bryn", "en-gb-x-gbcwmd", "m3", 35, 150),
    Speaker("cora", "en-us", "f4", 70, 175),
    Speaker("dara", "en-029", "m1", 45, 165),
    Speaker("egan", "en-gb-x-rp", "m7", 30, 140),
    Speaker("fern", "en-gb", "f1", 55, 185),
    Speaker("gael", "en-us-nyc", "m2", 50, 170),
    Speaker("hana", "en-gb-x-gbclan", "f3", 65, 155),
    Speaker("ivor", "en-us", "klatt", 40, 160),
    Speaker("juno", "en-gb-x-rp", "f5", 75, 165),
    Speaker("kirk", "en-gb-scotland", "m4", 25, 180),
    Speaker("lena", "en-029", "klatt4", 62, 150),
)
"""The speakers; names are lowercase letters only."""


def require_espeak() -> str:
    """Return the path of the espeak-ng executable, or exit with a hint."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit(
            "espeak-ng not found on PATH; install it first "
            "(Debian/Ubuntu: apt-get install espeak-ng)"
        )
    return exe


def synthesise(exe: str, text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    """Render ``text`` with espeak-ng and return (mono float32 samples, sample rate)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run(
            [exe, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    return audio.mean(axis=1), sr


def trim_silence(audio: np.ndarray, sr: int) -> np.ndarray:
    """Cut leading/trailing silence, keeping ``MARGIN_S`` seconds on each side."""
    frame = max(1, int(0.01 * sr))
    n_frames = len(audio) // frame
    if n_frames == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (TRIM_DB / 20))
    margin = int(MARGIN_S * sr)
    start = max(0, loud[0] * frame - margin)
    stop = min(len(audio), (loud[-1] + 1) * frame + margin)
    return audio[start:stop]


def add_noise(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mix in gently low-passed Gaussian noise at a random SNR."""
    snr_db = rng.uniform(*SNR_DB_RANGE)
    noise = rng.standard_normal(len(audio) + 2)
    noise = (noise[:-2] + noise[1:-1] + noise[2:]) / 3.0  # soften the top end a little
    signal_power = float(np.mean(audio**2))
    noise_power = float(np.mean(noise**2))
    scale = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return audio + scale * noise.astype(np.float32)


def render_clip(exe: str, word: str, speaker: Speaker, rng: np.random.Generator) -> np.ndarray:
    """Render one take of ``word`` by ``speaker`` as 16 kHz float32 audio."""
    pitch = int(np.clip(speaker.pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 99))
    speed = int(round(speaker.speed * (1 + rng.uniform(-SPEED_JITTER, SPEED_JITTER))))
    audio, sr = synthesise(exe, word, speaker.espeak_voice, pitch, speed)
    if sr != TARGET_SR:
        audio = soxr.resample(audio, sr, TARGET_SR, quality="HQ").astype(np.float32)
    audio = trim_silence(audio, TARGET_SR)
    audio = add_noise(audio, rng)
    return (audio * (PEAK / np.max(np.abs(audio)))).astype(np.float32)


def espeak_version(exe: str) -> str:
    """Return espeak-ng's version line, without its machine-specific data path."""
    result = subprocess.run([exe, "--version"], check=True, capture_output=True, text=True)
    return result.stdout.strip().splitlines()[0].split("Data at:")[0].strip()


def write_attribution(out: Path, version: str, takes: int, seed: int) -> None:
    """Write ``ATTRIBUTION.md`` describing how the clips were made."""
    n_clips = len(WORDS) * len(SPEAKERS) * takes
    rows = "\n".join(
        f"| `{s.name}` | `{s.voice}` | `{s.variant}` | {s.pitch} | {s.speed} |" for s in SPEAKERS
    )
    text = f"""# Demo data: synthetic spoken words

The audio in `audio/` was rendered with [espeak-ng](https://github.com/espeak-ng/espeak-ng)
({version}) by `examples/make_demo_data.py` (seed {seed}); no recordings of
people were used. espeak-ng is a GPL-3.0 program; the audio it outputs is not covered by
the GPL and ships here under this project's licence.

- Words (labels): {", ".join(f"`{w}`" for w in WORDS)}
- Speakers: {len(SPEAKERS)}; takes per word and speaker: {takes}; clips: {n_clips}
- File names: `audio/{{word}}_{{speaker}}_{{take}}.wav`
- Format: 16 kHz, mono, 16-bit PCM WAV; silence trimmed to about {int(MARGIN_S * 1000)} ms
  either side, peak-normalised to {PEAK}
- Each take has a random pitch jitter of up to ±{PITCH_JITTER} and a speed jitter of up to
  ±{int(SPEED_JITTER * 100)} % around the speaker's values, and low-level Gaussian noise
  at {SNR_DB_RANGE[0]:g}–{SNR_DB_RANGE[1]:g} dB SNR.

Speakers (espeak-ng voice, variant, base pitch `-p`, base speed `-s` in words per minute):

| speaker | voice | variant | pitch | speed |
|---|---|---|---|---|
{rows}

To regenerate (needs espeak-ng on `PATH`):

```
python examples/make_demo_data.py --out examples/demo_data
```
"""
    (out / "ATTRIBUTION.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Render every word/speaker/take and write the dataset to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "demo_data",
        help="output directory (default: examples/demo_data next to this script)",
    )
    parser.add_argument("--takes", type=int, default=3, help="takes per word and speaker")
    parser.add_argument("--seed", type=int, default=1234, help="random seed")
    args = parser.parse_args(argv)

    exe = require_espeak()
    audio_dir = args.out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for old in audio_dir.glob("*.wav"):  # drop clips from earlier runs
        old.unlink()

    total_s = 0.0
    for w, word in enumerate(WORDS):
        for s, speaker in enumerate(SPEAKERS):
            for take in range(args.takes):
                # One generator per clip, so a clip does not depend on rendering order.
                rng = np.random.default_rng([args.seed, w, s, take])
                clip = render_clip(exe, word, speaker, rng)
                path = audio_dir / f"{word}_{speaker.name}_{take}.wav"
                sf.write(path, clip, TARGET_SR, subtype="PCM_16")
                total_s += len(clip) / TARGET_SR

    write_attribution(args.out, espeak_version(exe), args.takes, args.seed)
    n = len(WORDS) * len(SPEAKERS) * args.takes
    print(f"wrote {n} clips ({total_s:.1f} s of audio) to {audio_dir}")


if __name__ == "__main__":
    main()
