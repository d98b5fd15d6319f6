"""Which clips the report plays: the most confidently wrong ones per head and true class."""
from __future__ import annotations

import numpy as np
import pandas as pd

from audiotune.report.clips import Clip, clips_section, wrong_clips

CATEGORICAL = {"name": "word", "kind": "categorical", "columns": ["word"], "classes": ["no", "yes"]}
BINARY = {"name": "flag", "kind": "binary", "columns": ["flag"], "classes": []}
REGRESSION = {"name": "f0", "kind": "regression", "columns": ["f0"], "classes": []}


def predictions() -> pd.DataFrame:
    yes = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.95])
    truth = ["no", "no", "yes", "no", "yes", "yes"]
    return pd.DataFrame({
        "uid": [f"c{k}" for k in range(6)], "split": "test",
        "score:word=no": 1 - yes, "score:word=yes": yes,
        "predicted:word": np.where(yes > 0.5, "yes", "no"), "true:word": truth,
        "score:flag": [0.8, 0.2, 0.55, 0.45, 0.9, 0.3], "target:flag": [0, 0, 0, 1, np.nan, 1],
        "score:f0": [100.0, 150, 200, 260, 300, 330], "target:f0": [100.0, 200, 200, 250, np.nan, 300],
    })


def test_categorical_clips_are_the_wrong_ones_most_confident_first_per_true_class() -> None:
    clips = wrong_clips(predictions(), [CATEGORICAL], "test", 2)
    assert [(c.uid, c.group, c.predicted) for c in clips] == [("c0", "no", "yes"), ("c3", "no", "yes"),
                                                              ("c4", "yes", "no"), ("c2", "yes", "no")]
    assert clips[0].scores == {"no": 0.09999999999999998, "yes": 0.9}
    assert [c.uid for c in wrong_clips(predictions(), [CATEGORICAL], "test", 1)] == ["c0", "c4"]
    assert wrong_clips(predictions(), [CATEGORICAL], "val", 5) == []


def test_binary_columns_per_true_value_and_unlabelled_rows_left_out() -> None:
    clips = wrong_clips(predictions(), [BINARY], "test", 5)
    assert [(c.uid, c.group) for c in clips] == [("c5", "flag=1"), ("c3", "flag=1"), ("c0", "flag=0"),
                                                 ("c2", "flag=0")]
    assert [round(c.confidence, 6) for c in clips] == [0.4, 0.1, 0.6, 0.1]


def test_regression_clips_are_the_largest_errors() -> None:
    clips = wrong_clips(predictions(), [REGRESSION], "test", 2)
    assert [(c.uid, c.confidence) for c in clips] == [("c1", 50.0), ("c5", 30.0)]


def test_the_section_says_why_a_clip_cannot_be_played() -> None:
    clip = Clip("c9", "word", "no", "no", "yes", 0.9, {"yes": 0.9}, problem="cannot be read: gone.wav: not found")
    html = clips_section([clip], "test", 5, 96_000)
    assert "gone.wav: not found" in html and "<audio" not in html
    assert "no wrong clips" in clips_section([], "test", 5, 96_000)
    assert "no clips asked for (--clips 0)" in clips_section([], "test", 0, 96_000)  # not "no wrong clips"


def test_remote_and_oversized_clips_link_their_source_with_start_and_end() -> None:
    link = "https://storage.cloud.google.com/b/rec.wav#t=1.000,1.500"
    remote = Clip("r1", "word", "no", "no", "yes", 0.9, link=link, link_text="gs://b/rec.wav, 1.00 s to 1.50 s")
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 2).astype(np.float32)
    large = Clip("l1", "word", "no", "no", "yes", 0.8, wave=noise, rate=16000, link="file:///data/l1.wav")
    small = Clip("s1", "word", "no", "no", "yes", 0.7, wave=noise[:800], rate=16000, link="file:///data/s1.wav")
    html = clips_section([remote, large, small], "test", 5, 5_000)
    cards = {c.split('"')[0]: c for c in html.split('data-uid="')[1:]}
    assert f'href="{link}"' in cards["r1"] and "gs://b/rec.wav, 1.00 s to 1.50 s</a>" in cards["r1"]
    assert "remote audio" in cards["r1"] and "<audio" not in cards["r1"] and "<img" not in cards["r1"]
    assert 'href="file:///data/l1.wav"' in cards["l1"] and "larger than 5 kB" in cards["l1"]
    assert "<audio" not in cards["l1"] and "<img" in cards["l1"]  # the spectrogram is still shown
    assert "<audio" in cards["s1"] and "<a " not in cards["s1"]  # under the cap: embedded, not linked


def test_soft_heads_use_their_vote_columns_and_the_majority_class() -> None:
    soft = {"name": "angry+calm", "kind": "soft", "columns": ["angry", "calm"], "classes": ["angry", "calm"]}
    rows = pd.DataFrame({"uid": ["a", "b", "c"], "split": "test", "score:angry": [0.8, 0.3, 0.6],
                         "score:calm": [0.2, 0.7, 0.4], "predicted:angry+calm": ["angry", "calm", "angry"],
                         "true:angry+calm": ["calm", "calm", None]})
    clips = wrong_clips(rows, [soft], "test", 5)
    assert [(c.uid, c.truth, c.predicted, c.confidence) for c in clips] == [("a", "calm", "angry", 0.8)]
