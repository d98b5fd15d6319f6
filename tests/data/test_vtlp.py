"""Vocal tract length perturbation: the warp of the frequency axis, the fbank it moves, training only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from audiotune.cli import main
from audiotune.data.dataset import AudioDataset
from audiotune.data.features import kaldi_fbank, vtlp_frequencies
from audiotune.data.input_spec import InputSpec

SR = 16000


@pytest.mark.parametrize("warp", [0.8, 0.9, 1.1, 1.2])
def test_the_warp_scales_low_frequencies_and_keeps_the_axis_ends(warp: float) -> None:
    nyquist = SR / 2
    freqs = torch.linspace(0, nyquist, 801, dtype=torch.float64)
    warped = vtlp_frequencies(freqs, warp, nyquist)
    assert warped[0] == 0 and warped[-1] == pytest.approx(nyquist)
    assert bool((warped.diff() > 0).all())  # still increasing: no frequency folds onto another
    low = freqs <= 0.6 * nyquist * min(warp, 1.0) / warp
    assert torch.allclose(warped[low], freqs[low] * warp)
    assert torch.equal(vtlp_frequencies(freqs, 1.0, nyquist), freqs)


def peak_bin(hz: float, warp: float = 1.0) -> int:
    sine = torch.sin(2 * torch.pi * hz * torch.arange(SR // 2) / SR)
    return int(kaldi_fbank(sine, SR, num_mel_bins=80, warp=warp).mean(0).argmax())


def test_a_warped_tone_peaks_where_the_scaled_tone_does() -> None:
    assert peak_bin(1000.0, 0.9) < peak_bin(1000.0) < peak_bin(1000.0, 1.1)
    assert abs(peak_bin(1000.0, 1.1) - peak_bin(1100.0)) <= 1
    assert abs(peak_bin(1000.0, 0.9) - peak_bin(900.0)) <= 1
    clip = torch.from_numpy(np.random.default_rng(0).standard_normal(SR // 2).astype(np.float32))
    assert torch.equal(kaldi_fbank(clip, SR, 80, warp=1.0), kaldi_fbank(clip, SR, 80))


def test_vtlp_changes_training_features_only(tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"c{k}.wav")
        sf.write(paths[-1], 0.5 * np.sin(2 * np.pi * (800.0 + 400 * k) * np.arange(SR // 2) / SR), SR)
    table = pd.DataFrame({"path": [str(p) for p in paths]}, index=pd.Index(["a", "b", "c"], name="uid"))

    def inputs(vtlp: float, train: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        spec = InputSpec(resample_rate=SR, features="fbank", num_mel_bins=40, vtlp=vtlp, vtlp_range=(0.85, 0.95))
        dataset = AudioDataset(table, np.zeros((3, 0)), spec, train=train)
        return [dataset[i]["inputs"] for i in range(3)]

    plain, warped = inputs(0.0, True), inputs(1.0, True)
    assert all(a.shape == b.shape and not torch.equal(a, b) for a, b in zip(plain, warped))
    # warps below 1 move each tone's energy to lower mel bins
    assert all(int(b.mean(0).argmax()) < int(a.mean(0).argmax()) for a, b in zip(plain, warped))
    assert all(torch.equal(a, b) for a, b in zip(inputs(0.0, False), inputs(1.0, False)))


def test_vtlp_range_bounds_the_warp_drawn_for_each_clip(tmp_path: Path) -> None:
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(SR // 2) / SR), SR)
    table = pd.DataFrame({"path": [str(tmp_path / "tone.wav")]}, index=pd.Index(["a"], name="uid"))

    def peak(vtlp: float, low: float, high: float) -> int:
        spec = InputSpec(resample_rate=SR, features="fbank", num_mel_bins=80, vtlp=vtlp, vtlp_range=(low, high))
        return int(AudioDataset(table, np.zeros((1, 0)), spec, train=True)[0]["inputs"].mean(0).argmax())

    plain = peak(0.0, 0.9, 1.1)
    assert peak(1.0, 0.85, 0.85) < plain < peak(1.0, 1.15, 1.15)  # the tone moves as far as the range says
    assert peak(1.0, 0.8, 0.8) < peak(1.0, 0.9, 0.9) < plain


def test_vtlp_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["train", "-d", str(tmp_path / "none.csv"), "-o", str(tmp_path / "run")]
    assert main([*base, "--vtlp", "0.5", "--features", "mfcc"]) == 2
    assert "--vtlp 0.5: warps the fbank's frequency axis; needs --features fbank" in capsys.readouterr().err
    assert main([*base, "--vtlp", "0.5", "--vtlp_range", "1.1", "0.9"]) == 2
    assert "--vtlp_range 1.1 0.9: give LOW HIGH with LOW <= HIGH" in capsys.readouterr().err
    assert main([*base, "--vtlp", "1.5"]) == 2
    assert "--vtlp 1.5: must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
