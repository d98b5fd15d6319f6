"""`audiotune taps detect`: peaks of the high-passed channel mean, streamed in blocks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy.signal import butter, find_peaks, sosfiltfilt

from audiotune.cli import main
from audiotune.data.audio import AudioError
from audiotune.taps.detect import DetectOptions, detect, select_by_distance

RATE = 16000


def tap_recording(path: Path, times: list[float], seconds: float = 6.0, channels: int = 4, seed: int = 0,
                  gains: list[float] | None = None, scale: float = 1.0) -> Path:
    """Low-frequency hum + faint noise, and a decaying 3 kHz burst at each time, louder on channel 0."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    base = 0.3 * np.sin(2 * np.pi * 50 * t) + 1e-3 * rng.standard_normal(n)
    data = np.repeat(base[:, None], channels, axis=1)
    burst_t = np.arange(int(0.03 * RATE)) / RATE
    burst = np.sin(2 * np.pi * 3000 * burst_t) * np.exp(-burst_t / 0.004)
    for i, when in enumerate(times):
        start = int(when * RATE)
        gain = 0.2 * (gains[i] if gains else 1.0)
        for c in range(channels):
            data[start:start + len(burst), c] += gain * burst / (1 + c)
    sf.write(path, (scale * data).astype(np.float32), RATE, subtype="FLOAT")
    return path


TIMES = [0.5, 1.25, 1.26, 2.0, 2.999, 3.0005, 4.4, 5.5]  # two pairs closer than 0.125 s: one of each stays


def test_streamed_blocks_find_the_peaks_of_one_whole_file_pass(tmp_path: Path) -> None:
    path = tap_recording(tmp_path / "taps.wav", TIMES)
    whole = detect(path, DetectOptions(block_seconds=100, cutoff=1000))
    # blocks of 1 s put a boundary at 3.0 s, between the two taps of a pair; margins of 0.05 s still suffice
    for block, margin in ((1.0, 0.05), (0.37, 0.2), (0.011, 0.05)):
        streamed = detect(path, DetectOptions(block_seconds=block, margin_seconds=margin, cutoff=1000))
        assert np.array_equal(streamed.positions, whole.positions), (block, margin)
        assert np.allclose(streamed.heights, whole.heights, rtol=1e-9) and streamed.threshold == whole.threshold
    # and both are scipy's find_peaks on the whole filtered trace, at the same threshold and distance
    x = sf.read(path, always_2d=True)[0].astype(np.float64).mean(axis=1)
    y = sosfiltfilt(butter(3, 1000, btype="highpass", fs=RATE, output="sos"), x)
    expected = find_peaks(y, height=whole.threshold, distance=round(0.125 * RATE))[0]
    assert np.array_equal(whole.positions, expected)


def test_adaptive_threshold_finds_each_tap_once_at_any_recording_level(tmp_path: Path) -> None:
    thresholds = []
    for scale in (1.0, 0.01):  # the same recording 40 dB quieter: the threshold follows its noise floor
        path = tap_recording(tmp_path / f"taps_{scale}.wav", [0.5, 1.5, 2.5, 3.5, 4.5, 5.5], scale=scale)
        found = detect(path, DetectOptions(envelope=0.002))
        assert np.allclose(found.positions / RATE, [0.5, 1.5, 2.5, 3.5, 4.5, 5.5], atol=0.01), scale
        assert found.floor is not None and found.threshold == pytest.approx(8 * found.floor)
        thresholds.append(found.threshold)
    assert thresholds[1] == pytest.approx(0.01 * thresholds[0], rel=0.03)  # 1 % histogram bins
    # quieter taps in the same noise: a fixed height above them finds only the loud ones
    path = tap_recording(tmp_path / "mixed.wav", [0.5, 1.5, 2.5], gains=[1.0, 0.3, 1.0])
    assert len(detect(path, DetectOptions(envelope=0.002)).positions) == 3
    assert np.allclose(detect(path, DetectOptions(envelope=0.002, height=0.05)).positions / RATE, [0.5, 2.5],
                       atol=0.01)
    # the energies are per channel, loudest on channel 0
    loud = detect(tmp_path / "taps_1.0.wav", DetectOptions(envelope=0.002))
    assert loud.energies.shape == (6, 4) and (np.argmax(loud.energies, axis=1) == 0).all()


def test_channel_select_and_bad_options_are_errors(tmp_path: Path) -> None:
    path = tap_recording(tmp_path / "taps.wav", TIMES)
    assert len(detect(path, DetectOptions(channel_select=(3,))).positions) > 0
    with pytest.raises(ValueError, match=r"--channel_select \[4\] outside its 4 channels"):
        detect(path, DetectOptions(channel_select=(4,)))
    with pytest.raises(ValueError, match="not below its Nyquist"):
        detect(path, DetectOptions(cutoff=9000))
    with pytest.raises(ValueError, match="threshold must be positive"):
        detect(path, DetectOptions(height=-1.0))


def test_select_by_distance_keeps_the_highest_first() -> None:
    positions = np.array([0, 5, 9, 30, 33])
    heights = np.array([1.0, 3.0, 2.0, 1.0, 0.5])
    assert select_by_distance(positions, heights, 6).tolist() == [False, True, False, True, False]
    assert select_by_distance(positions, heights, 0).all()


def test_cli_writes_taps_segment_reads_them_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recordings = [tap_recording(tmp_path / "a.wav", [0.5, 2.0, 4.0]),
                  tap_recording(tmp_path / "b.wav", [1.0, 3.0], seed=1)]
    out = tmp_path / "out" / "taps.csv"
    assert main(["taps", "detect", *map(str, recordings), "--out", str(out), "--envelope", "0.002",
                 "--plot", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out
    assert "a.wav: 3 taps" in printed and "b.wav: 2 taps" in printed and "5 taps in 2 recordings" in printed
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "time", "height", "energy_ch0", "energy_ch1", "energy_ch2", "energy_ch3"]
    assert table["path"].tolist() == ["../a.wav"] * 3 + ["../b.wav"] * 2  # relative to the table's folder
    assert np.allclose(table["time"], [0.5, 2.0, 4.0, 1.0, 3.0], atol=0.01)
    assert (tmp_path / "plots" / "a_taps.png").stat().st_size > 10_000
    segments = tmp_path / "out" / "segments.csv"
    assert main(["segment", str(out), "--out", str(segments), "--before", "0.0228", "--after", "0.0625"]) == 0
    assert len(pd.read_csv(segments)) == 5


def test_a_bad_recording_is_named_and_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = tap_recording(tmp_path / "a.wav", [0.5])
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    out = tmp_path / "taps.csv"
    assert main(["taps", "detect", str(good), str(tmp_path / "broken.wav"), str(tmp_path / "missing.wav"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "broken.wav: cannot be read as audio" in err and "missing.wav" in err and not out.exists()


def test_detect_names_an_unreadable_recording_as_the_data_layer_does(tmp_path: Path) -> None:
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    with pytest.raises(AudioError, match=r"broken.wav: cannot decode audio \("):
        detect(tmp_path / "broken.wav", DetectOptions())
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        detect(tmp_path / "missing.wav", DetectOptions())


def test_edge_relative_and_release_rules(tmp_path: Path) -> None:
    # taps at 0.1 s (a start transient), 1.0, 2.0, a weak one at 2.3 (0.2 x: a stop click), a faint one at 3.0
    path = tap_recording(tmp_path / "rules.wav", [0.1, 1.0, 2.0, 2.3, 3.0], gains=[1.0, 1.0, 1.0, 0.2, 0.06])
    base = DetectOptions(envelope=0.002, height=1.5e-3)
    times = lambda options: np.round(detect(path, options).positions / RATE, 2).tolist()  # noqa: E731
    assert times(base) == [0.1, 1.0, 2.0, 2.3, 3.0]
    assert times(DetectOptions(envelope=0.002, height=1.5e-3, edge=0.25)) == [1.0, 2.0, 2.3, 3.0]
    assert times(DetectOptions(envelope=0.002, height=1.5e-3, relative=0.1)) == [0.1, 1.0, 2.0, 2.3]
    assert times(DetectOptions(envelope=0.002, height=1.5e-3, relative=0.1, release=0.5)) == [0.1, 1.0, 2.0]
    # the relative reference comes from the whole recording, so blocks change nothing
    streamed = DetectOptions(envelope=0.002, height=1.5e-3, relative=0.1, release=0.5, block_seconds=0.4,
                             margin_seconds=0.05)
    assert times(streamed) == [0.1, 1.0, 2.0]
    with pytest.raises(ValueError, match="--release_ratio 0: must be > 0"):
        detect(path, DetectOptions(release_ratio=0))


@pytest.mark.shared
@pytest.mark.slow
def test_real_keystrokes_25_presses_per_file() -> None:
    """Zoom recordings of 25 presses of one key each: one set of settings finds exactly 25 in every file
    (at least 30 of 36 required)."""
    from conftest import shared_path

    folder = shared_path("data/keystrokes/Zoom")
    files = sorted(folder.glob("*.wav"))
    assert len(files) == 36
    options = DetectOptions(cutoff=5000, envelope=0.01, relative=0.1, edge=0.25, release=0.55)
    counts = {f.stem: len(detect(f, options).positions) for f in files}
    exact = [k for k, n in counts.items() if n == 25]
    assert len(exact) >= 30, counts


def test_each_detection_option_changes_the_result(tmp_path: Path) -> None:
    rules = tap_recording(tmp_path / "rules.wav", [0.1, 1.0, 2.0, 2.3, 3.0], gains=[1.0, 1.0, 1.0, 0.2, 0.06])
    pairs = tap_recording(tmp_path / "pairs.wav", TIMES)
    levels = tap_recording(tmp_path / "levels.wav", [0.5, 1.5, 2.5, 3.5], gains=[1.0, 0.3, 0.3, 0.3])

    def found(path: Path, **options: object) -> np.ndarray:
        return detect(path, DetectOptions(envelope=0.002, **options)).positions  # type: ignore[arg-type]

    def heights(path: Path, **options: object) -> np.ndarray:
        return detect(path, DetectOptions(envelope=0.002, height=1.5e-3, **options)).heights  # type: ignore[arg-type]

    assert not np.allclose(heights(rules, order=1), heights(rules, order=3))
    assert len(found(pairs, min_distance=0.005)) > len(found(pairs, min_distance=0.125))
    floors = [detect(rules, DetectOptions(envelope=0.002, floor_quantile=q)).floor for q in (0.5, 0.99)]
    assert floors[1] > 1.2 * floors[0]
    assert len(found(levels, relative=0.5, top=1)) == 1 and len(found(levels, relative=0.5, top=4)) == 4
    assert len(found(rules, height=1.5e-3, release=0.5, release_ratio=0.8)) == 4  # the 2.3 s click goes
    assert len(found(rules, height=1.5e-3, release=0.5, release_ratio=0.1)) == 5
    # channel 3 carries a quarter of channel 0's burst
    assert np.allclose(heights(rules, channel_select=(3,))[:3], heights(rules, channel_select=(0,))[:3] / 4,
                       rtol=0.05)


def tap2key_peaks(path: Path, peak_height: float) -> np.ndarray:
    """The peaks tap2key's WavPreprocess.py found: scipy's integer samples / 2**32, channel mean, order-3 1200 Hz
    high-pass (filtfilt), find_peaks at least 0.125 s apart above --peak_height."""
    from scipy.io import wavfile
    from scipy.signal import filtfilt

    rate, samples = wavfile.read(path)
    trace = (samples / 2.0 ** 32).mean(axis=1)
    b, a = butter(3, 1200 / (rate / 2), "highpass")
    return find_peaks(filtfilt(b, a, trace), distance=round(0.125 * rate), height=peak_height)[0]


@pytest.mark.parametrize("subtype", ["PCM_32", "PCM_24", "PCM_16"])
def test_peak_height_is_tap2keys_threshold_in_its_units(tmp_path: Path, subtype: str) -> None:
    source = tap_recording(tmp_path / "float.wav", [0.5, 1.5, 2.5, 3.5], gains=[1.0, 0.6, 0.3, 0.15])
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, sf.read(source)[0], RATE, subtype=subtype)
    heights = detect(path, DetectOptions(height=1e-6)).heights
    between = float(np.sqrt(np.sort(heights)[-2] * np.sort(heights)[-3]))  # of the 0.6 and the 0.3 tap
    peak_height = between * {"PCM_16": 2.0 ** 15, "PCM_24": 2.0 ** 31, "PCM_32": 2.0 ** 31}[subtype] / 2.0 ** 32
    found = detect(path, DetectOptions(peak_height=peak_height))
    expected = tap2key_peaks(path, peak_height)
    assert len(expected) == 2 and np.allclose(found.positions, expected, atol=1)
    assert found.threshold == pytest.approx(between)
    with pytest.raises(ValueError, match="instead of --height"):
        detect(path, DetectOptions(height=0.1, peak_height=peak_height))


def detect_cli(tmp_path: Path, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    """``audiotune taps detect ARGS`` (relative paths: from ``tmp_path``): its exit status and its stderr."""
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        status = main(["taps", "detect", *map(str, args)])
    finally:
        os.chdir(cwd)
    return status, capsys.readouterr().err


def test_nan_samples_are_an_error_naming_the_file_and_the_time(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    path = tap_recording(tmp_path / "nan.wav", [0.5, 1.5, 2.5], seconds=4.0, channels=8)
    data = sf.read(path, always_2d=True)[0]
    data[RATE: RATE + 10, 3] = np.nan  # 10 samples from 1.0 s
    sf.write(path, data.astype(np.float32), RATE, subtype="FLOAT")
    for block in (60.0, 0.3):  # the first bad sample, wherever the blocks begin
        with pytest.raises(AudioError, match=r"nan.wav: audio contains NaN or infinite samples; the first at 1.000 s"):
            detect(path, DetectOptions(block_seconds=block))
    status, err = detect_cli(tmp_path, capsys, path, "--out", tmp_path / "taps.csv")
    assert status == 2 and "nan.wav" in err and "1.000 s" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "taps.csv").exists()


def test_out_is_a_csv_and_none_of_the_recordings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tap_recording(tmp_path / "rec.wav", [0.5, 1.5])
    before = path.read_bytes()
    status, err = detect_cli(tmp_path, capsys, "rec.wav", "--out", "rec.wav")
    assert status == 2 and "--out rec.wav" in err and ".csv" in err and path.read_bytes() == before
    # a recording that is itself named .csv (WAV inside) is not written over either
    odd = tmp_path / "odd.csv"
    sf.write(odd, sf.read(path)[0], RATE, format="WAV", subtype="FLOAT")
    status, err = detect_cli(tmp_path, capsys, odd, "--out", "./odd.csv")
    assert status == 2 and "--out ./odd.csv: is one of the recordings" in err and sf.info(odd).frames > 0
    # nor is a file written beside --out: its report page
    page = tmp_path / "taps.report.html"
    sf.write(page, sf.read(path)[0], RATE, format="WAV", subtype="FLOAT")
    status, err = detect_cli(tmp_path, capsys, page, "--out", "taps.csv")
    assert status == 2 and f"--out taps.csv: writes its report page to {page}, which is one of the recordings" in err
    assert sf.info(page).frames > 0 and not (tmp_path / "taps.csv").exists()
    summary = tmp_path / "taps.report.json"  # nor its summary
    page.rename(summary)
    status, err = detect_cli(tmp_path, capsys, summary, "--out", "taps.csv", "--report", "false")
    assert status == 2 and f"--out taps.csv: writes its summary to {summary}, which is one of the recordings" in err


def test_a_bad_plot_folder_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tap_recording(tmp_path / "a.wav", [0.5, 1.5])
    (tmp_path / "plots").write_text("a file, not a folder")
    status, err = detect_cli(tmp_path, capsys, "a.wav", "--out", "taps.csv", "--plot", "plots")
    assert status == 2 and "--plot plots: cannot be the folder for the plots" in err and "Errno" not in err
    assert not (tmp_path / "taps.csv").exists()
    for name in ("taps.csv", "touch.csv", "keys.csv"):  # align refuses it before reading its inputs
        (tmp_path / f"align_{name}").write_text("")
    status = main(["taps", "align", str(tmp_path / "align_taps.csv"), "--touch_log", str(tmp_path / "align_touch.csv"),
                   "--keys", str(tmp_path / "align_keys.csv"), "--out", str(tmp_path / "segments.csv"),
                   "--plot", str(tmp_path / "plots")])
    err = capsys.readouterr().err
    assert status == 2 and "--plot" in err and "cannot be the folder for the plots" in err


def test_one_file_given_twice_is_refused_and_one_name_in_two_folders_gets_two_plots(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tap_recording(tmp_path / "ok.wav", [0.5, 1.5])
    status, err = detect_cli(tmp_path, capsys, "ok.wav", "./ok.wav", "--out", "taps.csv")
    assert status == 2 and "given more than once" in err and "./ok.wav: the file ok.wav again" in err
    assert not (tmp_path / "taps.csv").exists()
    for folder, times in (("s1", [0.5, 1.5]), ("s2", [1.0, 2.0, 3.0])):
        (tmp_path / folder).mkdir()
        tap_recording(tmp_path / folder / "r.wav", times)
    status, err = detect_cli(tmp_path, capsys, "s1/r.wav", "s2/r.wav", "--out", "taps.csv", "--envelope", "0.002",
                             "--plot", "plots", "--report", "false")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["r_1_taps.png", "r_2_taps.png"]
    assert len(pd.read_csv(tmp_path / "taps.csv")) == 5


def test_recordings_of_different_channel_counts_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tap_recording(tmp_path / "four.wav", [0.5], channels=4)
    tap_recording(tmp_path / "eight.wav", [0.5], channels=8)
    tap_recording(tmp_path / "eight_b.wav", [0.5], channels=8)
    for select in ([], ["--channel_select", "0", "1"]):  # channels both have: still one table of mixed clips
        status, err = detect_cli(tmp_path, capsys, "four.wav", "eight.wav", "eight_b.wav", "--out", "taps.csv",
                                 *select)
        assert status == 2 and "different channel counts" in err, select
        assert "4 channels (1 recording(s), e.g. four.wav)" in err
        assert "8 channels (2 recording(s), e.g. eight.wav)" in err
        assert not (tmp_path / "taps.csv").exists()


def test_a_recording_without_taps_is_named_in_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tap_recording(tmp_path / "taps.wav", [0.5, 1.5])
    tap_recording(tmp_path / "quiet.wav", [])
    status, err = detect_cli(tmp_path, capsys, "taps.wav", "quiet.wav", "--out", "taps.csv", "--height", "0.01",
                             "--report", "false")
    assert status == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no taps found in quiet.wav" in warnings[0]
    assert "counts its touches in no recording" in warnings[0] and "--height" in warnings[0]
    assert set(pd.read_csv(tmp_path / "taps.csv")["path"]) == {"taps.wav"}  # the table is as it was
    # the advice fits why: an --edge that leaves nothing, a recording of digital silence
    status, err = detect_cli(tmp_path, capsys, "taps.wav", "--out", "edge.csv", "--edge", "5", "--report", "false")
    assert status == 0 and "no taps found in taps.wav" in err and "--edge 5 s at each end leaves nothing of its" in err
    import soundfile as sf

    sf.write(tmp_path / "silent.wav", np.zeros((16000, 2)), 16000)
    status, err = detect_cli(tmp_path, capsys, "silent.wav", "--out", "silent.csv", "--report", "false")
    assert status == 0 and "its noise floor is below what can be measured: is it silent?" in err


def test_peaks_do_not_depend_on_the_blocks_with_an_envelope_longer_than_the_margin(tmp_path: Path) -> None:
    path = tap_recording(tmp_path / "long.wav", [0.5, 1.0, 2.0, 3.5, 5.0, 7.0, 7.5, 9.0], seconds=10,
                         gains=[1, 0.5, 1, 0.3, 1, 0.7, 1, 0.4])
    found = [detect(path, DetectOptions(envelope=2, height=5e-4, block_seconds=block)) for block in (60, 1, 0.3)]
    assert len(found[0].positions) > 8
    for streamed in found[1:]:
        assert np.array_equal(streamed.positions, found[0].positions)
        assert np.allclose(streamed.heights, found[0].heights, rtol=1e-9)


def test_each_bad_option_is_named_as_its_flag_with_its_value(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tap_recording(tmp_path / "a.wav", [0.5])
    status, err = detect_cli(tmp_path, capsys, "a.wav", "--out", "taps.csv", "--factor", "0")
    assert status == 2 and "--factor 0: must be > 0" in err and "min_distance" not in err
    status, err = detect_cli(tmp_path, capsys, "a.wav", "--out", "taps.csv", "--floor_quantile", "1.5", "--top", "0")
    assert status == 2 and "--floor_quantile 1.5: must be between 0 and 1; --top 0: must be >= 1" in err
    assert "--factor" not in err and len(err.strip().splitlines()) == 1


def test_align_help_names_its_defaults_and_sample_names_its_replacement(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["taps", "align", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default last7)" in shown and "default: off" in shown
    with pytest.raises(SystemExit):
        main(["taps", "align", "--sample"])
    err = capsys.readouterr().err
    assert "--sample: tap2key's WAV file per tap" in err and "audiotune train" in err
    assert "use `audiotune taps align`" not in err


def test_the_report_page_tells_recordings_of_one_file_name_apart(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        tap_recording(tmp_path / folder / "r.wav", [0.5, 1.5])
    status, _ = detect_cli(tmp_path, capsys, "a/r.wav", "b/r.wav", "--out", "taps.csv")
    page = (tmp_path / "taps.report.html").read_text()
    assert status == 0 and "<figcaption>a/r.wav: 2 taps" in page and "<figcaption>b/r.wav: 2 taps" in page


def test_the_summary_beside_the_table_lets_report_draw_a_page_the_command_did_not(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """OUT.report.json holds the options and each recording's threshold and noise floor, also with --report False;
    `audiotune report OUT` draws the page from it, the table and the recordings, as the command would have."""
    tap_recording(tmp_path / "quiet.wav", [])
    tap_recording(tmp_path / "r.wav", [0.5, 1.5, 2.5])
    status, _ = detect_cli(tmp_path, capsys, "r.wav", "quiet.wav", "--out", "out/taps.csv", "--envelope", "0.002",
                           "--report", "false")
    assert status == 0 and not (tmp_path / "out" / "taps.report.html").exists()
    summary = json.loads((tmp_path / "out" / "taps.report.json").read_text())
    assert summary["taps"] == 3 and summary["options"]["envelope"] == 0.002
    assert [(r["path"], r["taps"], r["sample_rate"]) for r in summary["recordings"]] == [
        ("../r.wav", 3, RATE), ("../quiet.wav", 0, RATE)]  # named as the table names them: from its folder
    assert all(r["threshold"] == 8 * r["noise_floor"] > 0 for r in summary["recordings"])
    assert main(["report", str(tmp_path / "out" / "taps.csv")]) == 0
    drawn = (tmp_path / "out" / "taps.report.html").read_text()
    status, _ = detect_cli(tmp_path, capsys, "r.wav", "quiet.wav", "--out", "again/taps.csv", "--envelope", "0.002")
    assert status == 0
    assert drawn == (tmp_path / "again" / "taps.report.html").read_text().replace("again/taps.csv", "out/taps.csv")
