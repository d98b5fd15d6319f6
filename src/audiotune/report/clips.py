"""The clips a model got wrong: which ones (the most confidently wrong per class), and their cards on the page:
a player, a spectrogram thumbnail, true and predicted labels with scores."""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

import numpy as np
import pandas as pd

from audiotune.config import HeadSpec
from audiotune.outputs import predicted_column, score_column, target_column, true_column
from audiotune.report.html import note
from audiotune.report.media import audio_uri, spectrogram_uri


@dataclass
class Clip:
    """One wrong clip of one head: ``group`` is its true class (regression: its column); ``wave`` is filled in
    with the segment as the model read it (or ``problem`` says why it cannot be played); ``link`` opens its source
    (remote audio is linked, not read)."""

    uid: str
    head: str
    group: str
    truth: str
    predicted: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    wave: np.ndarray | None = None
    rate: int = 0
    place: str = ""
    problem: str = ""
    link: str = ""  # the segment's source as a browser opens it, its start and end as a media fragment (#t=)
    link_text: str = ""


def _distribution(rows: pd.DataFrame, head: dict, per_class: int) -> list[Clip]:
    name, classes = head["name"], list(head["classes"])
    outputs = HeadSpec(name, head["kind"], list(head["columns"]), classes).output_names  # one per class
    scores = {c: score_column(output) for c, output in zip(classes, outputs)}
    if true_column(name) not in rows or not all(c in rows for c in scores.values()):
        return []
    wrong = rows[rows[true_column(name)].notna() & (rows[true_column(name)] != rows[predicted_column(name)])]
    clips = []
    for truth in classes:
        part = wrong[wrong[true_column(name)] == truth]
        if part.empty:
            continue
        given = part[predicted_column(name)].map({c: k for k, c in enumerate(scores)}).to_numpy(int)
        chosen = part[list(scores.values())].to_numpy(float)[np.arange(len(part)), given]  # its given class's
        for k in np.argsort(-chosen, kind="stable")[:per_class]:
            row = part.iloc[k]
            predicted = str(row[predicted_column(name)])
            clips.append(Clip(str(row["uid"]), name, str(truth), str(truth), predicted, float(chosen[k]),
                              {truth: float(row[scores[truth]]), predicted: float(chosen[k])}))
    return clips


def _binary(rows: pd.DataFrame, head: dict, per_class: int) -> list[Clip]:
    clips = []
    for column in head["columns"]:
        score, target = rows.get(score_column(column)), rows.get(target_column(column))
        if score is None or target is None:
            continue
        wrong = rows[target.notna() & ((score >= 0.5) != (target >= 0.5))]
        for value in (1, 0):
            part = wrong[(wrong[target_column(column)] >= 0.5) == bool(value)]
            order = np.argsort(-np.abs(part[score_column(column)].to_numpy() - 0.5), kind="stable")[:per_class]
            for k in order:
                row = part.iloc[k]
                clips.append(Clip(str(row["uid"]), head["name"], f"{column}={value}", f"{column}={value}",
                                  f"{column}={1 - value}", float(abs(row[score_column(column)] - 0.5) * 2),
                                  {f"P({column}=1)": float(row[score_column(column)])}))
    return clips


def _regression(rows: pd.DataFrame, head: dict, per_class: int) -> list[Clip]:
    clips = []
    for column in head["columns"]:
        if score_column(column) not in rows or target_column(column) not in rows:
            continue
        part = rows[rows[target_column(column)].notna()]
        error = (part[score_column(column)] - part[target_column(column)]).abs().to_numpy()
        for k in np.argsort(-error, kind="stable")[:per_class]:
            row = part.iloc[k]
            clips.append(Clip(str(row["uid"]), head["name"], column, f"{row[target_column(column)]:.4g}",
                              f"{row[score_column(column)]:.4g}", float(error[k]), {"|error|": float(error[k])}))
    return clips


def wrong_clips(predictions: pd.DataFrame, heads: list[dict], split: str, per_class: int) -> list[Clip]:
    """The ``per_class`` most confidently wrong clips of ``split`` per head and true class: categorical and soft
    heads by the wrong class's score, binary columns by the distance of the score from 0.5 (per true value),
    regression columns by the absolute error."""
    rows = predictions[predictions["split"] == split]
    pick = {"categorical": _distribution, "soft": _distribution, "binary": _binary, "regression": _regression}
    return [clip for head in heads for clip in pick[head["kind"]](rows, head, per_class)]


def _link(clip: Clip, why: str) -> str:
    return (f'<br><a class="source" href="{escape(clip.link)}" target="_blank" rel="noopener">'
            f"{escape(clip.link_text or clip.link)}</a>" + note(why))


def clip_card(clip: Clip, max_bytes: int) -> str:
    """One clip: labels and scores, then its player and spectrogram, or a link to its source when its audio is
    remote or larger than ``max_bytes`` even compressed (or why it cannot be played)."""
    scores = ", ".join(f"{escape(str(k))} {v:.3f}" for k, v in clip.scores.items())
    parts = [f'<div class="clip" data-uid="{escape(clip.uid)}"><b>{escape(clip.uid)}</b><br>true '
             f'<b>{escape(clip.truth)}</b>, predicted <b class="wrong">{escape(clip.predicted)}</b><br>{scores}']
    if clip.place:
        parts.append(f"<br>{escape(clip.place)}")
    if clip.wave is not None and len(clip.wave):
        embedded = audio_uri(clip.wave, clip.rate, max_bytes)
        parts.append(f'<img alt="spectrogram of {escape(clip.uid)}" src="{spectrogram_uri(clip.wave, clip.rate)}">')
        seconds = f"{len(clip.wave) / clip.rate:.2f} s at {clip.rate} Hz"
        if embedded:
            uri, remark = embedded
            parts.append(f'<audio controls preload="metadata" src="{uri}"></audio>'
                         f"<br>{escape(seconds + (f'; {remark}' if remark else ''))}")
        elif clip.link:
            parts.append(_link(clip, f"{seconds}: larger than {max_bytes / 1000:g} kB even compressed, so linked, "
                                     "not embedded"))
        else:
            parts.append(note(f"{seconds}: larger than {max_bytes / 1000:g} kB even compressed, not embedded"))
    elif clip.link and not clip.problem:
        parts.append(_link(clip, "remote audio: linked to its source, not embedded"))
    else:
        parts.append(note(clip.problem or "audio not available"))
    return "".join(parts) + "</div>"


def clips_section(clips: list[Clip], split: str, per_class: int, max_bytes: int, missing: str = "") -> str:
    """Every head's wrong clips, grouped by true class."""
    if missing:
        return note(missing)
    if not per_class:
        return note("no clips asked for (--clips 0)")
    if not clips:
        return note(f"no wrong clips on the {split} split")
    parts: list[str] = [note(f"The {per_class} most confidently wrong clips of the {split} split per head and true "
                             "class, as the model read them (segment, channel mode, sample rate, crop).")]
    groups: dict[tuple[str, str], list[Clip]] = {}
    for clip in clips:
        groups.setdefault((clip.head, clip.group), []).append(clip)
    for (head, group), members in groups.items():
        parts.append(f"<h3>{escape(head)}: {escape(group)}</h3>")
        parts.append('<div class="clips">' + "".join(clip_card(c, max_bytes) for c in members) + "</div>")
    return "".join(parts)
