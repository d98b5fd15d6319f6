"""FT-w2v2-ser's Lightning checkpoints read weights only; its cluster JSON checked against the K values given."""
from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

import pytest
import torch

from audiotune.engine.seed_ser import import_clusters, import_ser_encoder, read_lightning_state


class Bookkeeping:  # a class the checkpoint names beside its tensors (as Lightning 1.4 named its callbacks)
    ran = False

    def __init__(self) -> None:
        Bookkeeping.ran = True


class Hook:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import subprocess
        return subprocess.call, (["touch", str(self.marker)],)


def test_classes_beside_the_tensors_become_inert_stand_ins(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "callbacks": {Bookkeeping: {"x": 1}}, "hp": Bookkeeping()}, path)
    Bookkeeping.ran = False
    state, stand_ins = read_lightning_state(path)
    assert list(state) == ["w"] and stand_ins == [f"{__name__}.Bookkeeping"] and not Bookkeeping.ran
    marker = tmp_path / "marker"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hook": Hook(marker)}, path)  # the stand-in is called instead
    stand_ins = read_lightning_state(path)[1]
    assert len(stand_ins) == 1 and stand_ins[0].endswith(".call") and not marker.exists()


def test_the_seeds_torchscript_export_and_wav2vec_v1_classifier_are_named_with_what_to_import(tmp_path: Path) -> None:
    """run_downstream_custom.py's script.pt (TorchScript) and run_pretrain.py's stage-1 checkpoint (fairseq's wav2vec
    v1 under ``wav2vec.``) hold no wav2vec2 to import: each is named, with the file or command that replaces it."""
    script = tmp_path / "script.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.ones(1, 2)), script)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before torch.load would warn that it hands it to torch.jit.load
        with pytest.raises(ValueError, match=rf"^{script}: a TorchScript archive .*import the eager.pt state dict"):
            read_lightning_state(script)
    stage1 = tmp_path / "w2v-09-0.52-0.81.ckpt"
    torch.save({"state_dict": {"wav2vec.feature_extractor.conv_layers.0.0.weight": torch.ones(2),
                               "linearhead.0.weight": torch.ones(2)}}, stage1)
    with pytest.raises(ValueError, match=rf"^{stage1}: a wav2vec v1 \(fairseq\) model, the seed's P-TAPT stage-1 "
                                         r"classifier.*`import clusters`.*`cluster --run`"):
        import_ser_encoder(stage1, "unused", tmp_path / "encoder")
    assert not (tmp_path / "encoder").exists()


@pytest.mark.parametrize(("value", "message"), [
    ([1.7, 2.9, 0.2], "'a.wav': 1.7 in its labels for K=4, not a cluster index"),  # not cut to 1, 2, 0
    ([1, None, 2], "'a.wav': null in its labels for K=4"),
    ([0, True], "'a.wav': true in its labels for K=4"),
    (5, "'a.wav' holds 5, not a list of frame labels"),
    ({"x": 1}, "'a.wav' holds {\"x\": 1}, not a list of frame labels"),
])
def test_a_cluster_label_that_is_no_cluster_index_is_named(tmp_path: Path, value: object, message: str) -> None:
    path = tmp_path / "4-clus.json"
    path.write_text(json.dumps({"a.wav": value}))
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        import_clusters(path, [4], tmp_path / "l.parquet")
    assert not (tmp_path / "l.parquet").exists()


def test_each_k_is_imported_once(tmp_path: Path) -> None:
    """Two lists for one K would be two rows of (clip, K), the second read in place of the first."""
    path = tmp_path / "all-clus.json"
    path.write_text(json.dumps({"a.wav": [[1, 2, 3], [0, 0, 1]]}))
    with pytest.raises(ValueError, match=re.escape("--num_clusters [4, 4]: each K once")):
        import_clusters(path, [4, 4], tmp_path / "l.parquet")


def test_cluster_lists_that_do_not_fit_the_k_values_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "64-clus.json"
    path.write_text(json.dumps({"a.wav": [0, 3, 3, 1]}))  # one K: a flat list per clip
    meta = import_clusters(path, [4], tmp_path / "l.parquet")
    assert meta["num_clusters"] == [4] and not meta["frames_checked"]
    with pytest.raises(ValueError, match="'a.wav' has 1 label lists, --num_clusters names 2"):
        import_clusters(path, [4, 8], tmp_path / "m.parquet")
    path.write_text(json.dumps({"a.wav": [[0, 1], [0, 1, 2]]}))
    with pytest.raises(ValueError, match="the label lists of its K values differ in length"):
        import_clusters(path, [4, 8], tmp_path / "m.parquet")
    path.write_text(json.dumps({"a.wav": [[0] * 5]}))
    (tmp_path / "audio").mkdir()
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "audio" / "a.wav", np.zeros(16000, dtype=np.float32), 16000)  # 49 wav2vec2 frames
    with pytest.raises(ValueError, match="'a.wav' has 5 frame labels, but its audio makes 49 wav2vec2 frames"):
        import_clusters(path, [4], tmp_path / "m.parquet", tmp_path / "audio")
    assert not (tmp_path / "m.parquet").exists()


def test_an_architecture_hub_id_without_a_network_fails_at_once(tmp_path: Path, no_network: None) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"wav2vec2.wav2vec2.x": torch.zeros(1)}}, path)
    from transformers import AutoConfig, Wav2Vec2Model  # noqa: F401  (the time measured is the hub's, not imports')

    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^-c facebook/wav2vec2-base: not a local folder, .* cannot be reached"):
        import_ser_encoder(path, "facebook/wav2vec2-base", tmp_path / "enc")
    assert time.monotonic() - start < 5 and not (tmp_path / "enc").exists()


def test_cluster_labels_are_written_only_to_a_parquet_file_name(tmp_path: Path) -> None:
    path = tmp_path / "64-clus.json"
    path.write_text(json.dumps({"a.wav": [0, 3, 3, 1]}))
    with pytest.raises(ValueError, match=r"^--out .*r12\.csv: give a \.parquet file name"):
        import_clusters(path, [4], tmp_path / "r12.csv")
    assert not (tmp_path / "r12.csv").exists()


def test_imported_labels_take_the_files_that_described_earlier_labels_away(tmp_path: Path) -> None:
    """Labels imported over a `cluster` output: its statistics, fitted clips and skip list described the earlier
    labels (P-TAPT recorded the earlier fitted clips as the clips its encoder heard)."""
    from audiotune.outputs import frame_label_sidecars

    out = tmp_path / "l.parquet"
    for path in (out, *frame_label_sidecars(out)):
        path.write_text("of the earlier labels")
    source = tmp_path / "4-clus.json"
    source.write_text(json.dumps({"a.wav": [0, 3, 3, 1]}))
    import_clusters(source, [4], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4-clus.json", "l.parquet"]
