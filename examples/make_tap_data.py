#!/usr/bin/env python
"""Render a synthetic tap2key-style dataset: 8-channel 96 kHz tap recordings and an optical touch log.

Each key of a 36-key layout (``1``-``0``, ``q``-``p``, ``a``-``l``, ``z``-``m``) sits at a point of a table
surface watched by eight microphones (channels 0-3 along the bottom edge, 4-7 along the top). A tap on a key
is a key-press sound, delayed and attenuated per microphone by its distance from the key and convolved with
that channel of a real 8-channel room impulse response. The recordings get low-level noise and hum.

Key-press sounds: with ``--presses DIR`` (a folder of ``{key}.wav`` recordings of repeated presses of one key,
such as the Zoom keystroke set) every key taps with its own real presses, cut around the peaks that
``audiotune taps detect`` finds; without it, every key has a synthetic click (a noise burst through a
resonance whose frequency depends on the key). The impulse response is ``--rir`` (an 8-channel WAV at any
rate); without it, a synthetic exponentially decaying one is used.

The touch log is in the format of the tap2key system's neonode sensor (no header; timestamp, touch id, event,
x, y, size; a ``   Down`` event when a finger lands, ``   Move`` and ``     Up`` after it). Its clock is the
recording clock shifted by ``--latency`` (a tap's sound comes ``latency`` seconds after the logged touch, so a
negative value means the sound is earlier), plus Gaussian jitter of ``--jitter`` seconds. Some taps are
missed by the sensor (no touch), some touches have no tap (spurious), and some taps land off the keys (the
sensor sees them; their nearest ``keys.csv`` point is ``none``).

Output (``--out``)::

    01.acoustic/tap_HH_MM_SS_ffffff_MM_DD_YYYY.wav   recordings; the last 7 integer groups of the name are their
                                                     start time (hour, minute, second, fraction, month, day,
                                                     year), as the tap2key system reads them
    02.neonode/session_nnode.csv                     the touch log of all recordings (time ordered)
    keys.csv                                         key centres (no header): x, y, label; 'none' points
                                                     around the layout absorb off-key touches
    truth.csv                                        every tap: path, time (s: the positive peak of its channel
                                                     mean high-passed at 1200 Hz, where the tap2key system
                                                     located taps), label, x, y, touched (whether the sensor
                                                     logged it)
    truth.json                                       the latency, jitter, counts and settings used

Usage (synthetic clicks and room; add ``--presses DIR --rir FILE`` for real sounds)::

    python examples/make_tap_data.py --out /tmp/taps
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, resample_poly, sosfiltfilt

ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
KEY_PITCH = 170.0  # sensor units between key centres (a unit is taken as 0.1 mm)
UNIT_METRES = 1e-4
SPEED_OF_SOUND = 343.0
PRESS_SECONDS = (0.01, 0.05)  # a press sound: this long before / after its peak (a key's release, ~0.08 s
# after the press in real keystrokes, is left out: a tap on a table has none)
MICROPHONES = np.array([[x, y] for y in (1500.0, 700.0) for x in (150.0, 650.0, 1150.0, 1650.0)])


def key_layout() -> list[tuple[float, float, str]]:
    """(x, y, label) of every key centre, then 'none' points around the layout."""
    keys = [(300.0 + KEY_PITCH * col + 60.0 * row, 800.0 + KEY_PITCH * row, key)
            for row, letters in enumerate(ROWS) for col, key in enumerate(letters)]
    xs, ys = [k[0] for k in keys], [k[1] for k in keys]
    left, right, top, bottom = min(xs) - KEY_PITCH, max(xs) + KEY_PITCH, min(ys) - KEY_PITCH, max(ys) + KEY_PITCH
    ring = [(x, y) for x in np.linspace(left, right, 12) for y in (top, bottom)]
    ring += [(x, y) for y in np.linspace(top, bottom, 5)[1:-1] for x in (left, right)]
    return keys + [(float(x), float(y), "none") for x, y in ring]


def key_responses(layout: list[tuple[float, float, str]], rir: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    """Per key, an (n, 8) impulse response: distance delay and 1/distance gain per microphone, then the room."""
    out = {}
    for x, y, label in layout:
        if label == "none":
            continue
        distance = np.hypot(*(MICROPHONES - [x, y]).T) * UNIT_METRES
        delays = np.round(distance / SPEED_OF_SOUND * rate).astype(int)
        response = np.zeros((delays.max() + rir.shape[0], 8))
        for channel in range(8):
            gain = 0.05 / (0.05 + distance[channel])
            response[delays[channel]:delays[channel] + rir.shape[0], channel] = gain * rir[:, channel]
        out[label] = response
    return out


def load_rir(path: str | None, rate: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 8) impulse response at ``rate``, starting a little before its first arrival, peak 1."""
    if path is None:
        n = int(0.05 * rate)
        decay = np.exp(-np.arange(n) / (0.008 * rate))[:, None]
        rir = rng.normal(size=(n, 8)) * decay
        rir[0] = 1.0
    else:
        rir, source_rate = read_audio(Path(path))
        if rir.shape[1] != 8:
            raise SystemExit(f"{path}: {rir.shape[1]} channels; an 8-channel impulse response is needed")
        if source_rate != rate:
            g = np.gcd(rate, source_rate)
            rir = resample_poly(rir, rate // g, source_rate // g, axis=0)
        first = int(np.argmax(np.abs(rir).max(axis=1) > 0.2 * np.abs(rir).max()))
        rir = rir[max(first - int(0.001 * rate), 0):]
    return rir / np.abs(rir).max()


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(samples, channels) float64 and the rate; an unreadable file stops the script with one line naming it."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    try:
        return sf.read(path, dtype="float64", always_2d=True)
    except (RuntimeError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise SystemExit(f"{path}: not readable as audio ({err})") from None


def real_presses(folder: Path, labels: list[str], rate: int) -> dict[str, list[np.ndarray]]:
    """Press sounds of each key from ``folder/{key}.wav``, found with ``audiotune taps detect``."""
    from audiotune.taps.detect import DetectOptions, detect

    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such folder (--presses needs one recording per key: {', '.join(labels)})")
    options = DetectOptions(cutoff=5000, envelope=0.01, relative=0.1, edge=0.25, release=0.55)
    presses: dict[str, list[np.ndarray]] = {}
    for label in labels:
        path = folder / f"{label}.wav"
        if not path.is_file():
            raise SystemExit(f"{path}: missing; --presses needs one recording per key ({', '.join(labels)})")
        audio, source_rate = read_audio(path)
        audio = audio.mean(axis=1)
        before, after = (round(s * source_rate) for s in PRESS_SECONDS)
        try:
            found = detect(path, options)
        except ValueError as err:  # audiotune's DataError names the file
            raise SystemExit(str(err)) from None
        cuts = [audio[p - before:p + after] for p in found.positions if p >= before and p + after <= len(audio)]
        if not cuts:
            raise SystemExit(f"{path}: no key press found")
        g = np.gcd(rate, source_rate)
        fade = np.minimum(1.0, np.linspace(5.0, 0.0, before + after))  # the last fifth fades out
        presses[label] = [resample_poly((c - c.mean()) * fade, rate // g, source_rate // g) for c in cuts]
    return presses


def synthetic_presses(labels: list[str], rate: int, rng: np.random.Generator, count: int = 8) -> dict[str, list]:
    """A few clicks per key: a noise burst ringing at a key-dependent frequency."""
    before, after = (round(s * rate) for s in PRESS_SECONDS)
    t = np.arange(after) / rate
    presses = {}
    for index, label in enumerate(labels):
        frequency = 1500.0 + 120.0 * index
        clicks = []
        for _ in range(count):
            ring = np.sin(2 * np.pi * frequency * rng.uniform(0.97, 1.03) * t) * np.exp(-t / 0.006)
            burst = rng.normal(size=after) * np.exp(-t / 0.0015)
            clicks.append(np.concatenate([np.zeros(before), 0.6 * ring + 0.4 * burst]))
        presses[label] = clicks
    return presses


def neonode_line(when: dt.datetime, touch: int, event: str, x: float, y: float) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S.%f},{touch},{event:>7},{x:.0f},{y:.0f},{12}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--presses", help="folder of {key}.wav press recordings (default: synthetic clicks)")
    parser.add_argument("--rir", help="8-channel room impulse response WAV (default: synthetic)")
    parser.add_argument("--recordings", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each recording")
    parser.add_argument("--rate", type=int, default=96000)
    parser.add_argument("--latency", type=float, default=-0.14, help="seconds from a logged touch to its sound")
    parser.add_argument("--jitter", type=float, default=0.004, help="sd of the touch times, seconds")
    parser.add_argument("--missed", type=float, default=0.03, help="share of taps the sensor misses")
    parser.add_argument("--spurious", type=float, default=0.03, help="touches without a tap, per tap")
    parser.add_argument("--offkey", type=float, default=0.03, help="share of taps that land off the keys")
    parser.add_argument("--gap", type=float, nargs=2, default=(0.3, 0.9), help="seconds between taps (range)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    final = Path(args.out)
    if final.exists() and any(final.iterdir()) and not (final / "truth.json").is_file():
        raise SystemExit(f"{final}: exists and is not an earlier output of this script (no truth.json); "
                         "choose another --out")

    # every input is read before anything is written
    layout = key_layout()
    labels = [label for _, _, label in layout if label != "none"]
    centres = {label: (x, y) for x, y, label in layout if label != "none"}
    responses = key_responses(layout, load_rir(args.rir, args.rate, rng), args.rate)
    presses = (real_presses(Path(args.presses), labels, args.rate) if args.presses
               else synthetic_presses(labels, args.rate, rng))
    # written aside, then renamed into place: --out appears complete or not at all
    out = final.parent / f".{final.name}.partial"
    shutil.rmtree(out, ignore_errors=True)
    (out / "01.acoustic").mkdir(parents=True)
    (out / "02.neonode").mkdir(parents=True)
    none_points = [(x, y) for x, y, label in layout if label == "none"]
    highpass = butter(3, 1200, btype="highpass", fs=args.rate, output="sos")

    truth, log, touch_id = [], [], 0
    start = dt.datetime(2023, 3, 15, 14, 2, 33, 250000)
    n = int(args.seconds * args.rate)
    for number in range(args.recordings):
        name = f"tap_{start:%H_%M_%S_%f_%m_%d_%Y}.wav"
        audio = rng.normal(scale=2e-4, size=(n, 8))
        audio += 2e-3 * np.sin(2 * np.pi * 50 * np.arange(n) / args.rate)[:, None]
        t = 0.5
        while True:
            t += rng.uniform(*args.gap)
            if t > args.seconds - 0.5:
                break
            label = labels[rng.integers(len(labels))]
            x, y = centres[label]
            offkey = rng.random() < args.offkey
            if offkey:  # the tap lands off the layout: the sound of the nearest key, the touch on the margin
                x, y = none_points[rng.integers(len(none_points))]
            else:
                x, y = x + rng.uniform(-40, 40), y + rng.uniform(-40, 40)
            press = presses[label][rng.integers(len(presses[label]))]
            sound = fftconvolve(press[:, None], responses[label], axes=0) * rng.uniform(0.5, 1.5)
            peak = int(np.argmax(sosfiltfilt(highpass, sound.mean(axis=1))))
            begin = int(round(t * args.rate)) - peak
            stop = min(begin + len(sound), n)
            audio[begin:stop] += sound[:stop - begin]
            touched = rng.random() >= args.missed
            truth.append({"path": f"01.acoustic/{name}", "time": round(t, 6), "label": "none" if offkey else label,
                          "x": round(x), "y": round(y), "touched": touched})
            if touched:
                when = start + dt.timedelta(seconds=t - args.latency + rng.normal(scale=args.jitter))
                touch_id += 1
                log.append((when, neonode_line(when, touch_id, "Down", x, y)))
                log.append((when + dt.timedelta(seconds=0.03), neonode_line(when + dt.timedelta(seconds=0.03),
                                                                           touch_id, "Move", x + 3, y - 2)))
                log.append((when + dt.timedelta(seconds=0.08), neonode_line(when + dt.timedelta(seconds=0.08),
                                                                           touch_id, "Up", x + 3, y - 2)))
        for _ in range(rng.binomial(len([r for r in truth if r["path"].endswith(name)]), args.spurious)):
            t = rng.uniform(0.5, args.seconds - 0.5)  # a touch with no tap (a resting finger, a sleeve)
            when = start + dt.timedelta(seconds=t - args.latency)
            label = labels[rng.integers(len(labels))]
            touch_id += 1
            log.append((when, neonode_line(when, touch_id, "Down", *centres[label])))
        peak = np.abs(audio).max()
        sf.write(out / "01.acoustic" / name, audio / peak * 0.9, args.rate, subtype="PCM_16")
        start += dt.timedelta(seconds=args.seconds + 7.125 + number)
    log.sort()
    (out / "02.neonode" / "session_nnode.csv").write_text("".join(line + "\n" for _, line in log))
    (out / "keys.csv").write_text("".join(f"{x:.0f},{y:.0f},{label}\n" for x, y, label in layout))
    with open(out / "truth.csv", "w") as f:
        f.write("path,time,label,x,y,touched\n")
        f.writelines(f"{r['path']},{r['time']},{r['label']},{r['x']},{r['y']},{r['touched']}\n" for r in truth)
    touched = sum(r["touched"] for r in truth)
    summary = {"latency": args.latency, "jitter": args.jitter, "rate": args.rate, "recordings": args.recordings,
               "taps": len(truth), "touched_taps": touched, "missed_taps": len(truth) - touched,
               "offkey_taps": sum(r["label"] == "none" for r in truth),
               "spurious_touches": sum(1 for _, line in log if line.split(",")[2].strip() == "Down") - touched,
               "presses": args.presses or "synthetic", "rir": args.rir or "synthetic", "seed": args.seed}
    (out / "truth.json").write_text(json.dumps(summary, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    out.rename(final)
    print(f"{final}: {summary['taps']} taps in {args.recordings} recordings ({summary['missed_taps']} missed by the "
          f"sensor, {summary['offkey_taps']} off the keys, {summary['spurious_touches']} spurious touches)")


if __name__ == "__main__":
    main()
