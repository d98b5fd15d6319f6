"""``audiotune cluster``: which clips k-means is fitted on (--fit_on), that every clip is labelled anyway, and
which frames a run's encoder gives (after its --frame_activation)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import HF_TINY, make_uid_dataset, save_hf_checkpoint

from audiotune.cli import main
from audiotune.data.pseudo_labels import read_pseudo_labels
from audiotune.engine import cluster as engine
from audiotune.engine.clips_read import COLUMNS

transformers = pytest.importorskip("transformers")
pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = transformers.Wav2Vec2Config(**HF_TINY, feat_extract_norm="layer", do_stable_layer_norm=True)
    torch.manual_seed(0)
    return save_hf_checkpoint(transformers.Wav2Vec2Model(config), tmp_path_factory.mktemp("cluster") / "encoder")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_uid_dataset(tmp_path_factory.mktemp("data"))


def cluster(ds: dict, checkpoint: Path, out: Path, *extra: str, data: Path | None = None) -> int:
    return main(["cluster", "-c", str(checkpoint), "-i", str(ds["prefix"]), "-d", str(data or ds["split"]),
                 "--out", str(out), "--num_clusters", "4", "--sample_ratio", "0.5", "--layer", "1", "-bs", "4",
                 *extra])


def split_uids(ds: dict, split: str) -> set[str]:
    return set(pd.read_csv(ds["split"] / f"{split}.csv")["uid"])


@pytest.mark.slow
def test_kmeans_is_fitted_on_the_training_split_and_every_clip_is_labelled(
        checkpoint: Path, dataset: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "labels.parquet"
    assert cluster(dataset, checkpoint, out) == 0
    assert "k-means fitted on 16 clips (train; --fit_on train" in capsys.readouterr().out
    fitted = pd.read_csv(tmp_path / "labels.fit_rows.csv")
    assert set(fitted["uid"]) == split_uids(dataset, "train") and set(fitted["split"]) == {"train"}
    # listed as a run's clips_read.csv lists its clips: a pretraining on these labels records them
    assert list(fitted.columns) == COLUMNS and set(fitted.stage) == {"cluster"} and set(fitted.run) == {str(out)}
    assert all(Path(path).is_file() for path in fitted.path)
    assert not set(fitted["uid"]) & (split_uids(dataset, "test") | split_uids(dataset, "val"))
    labels = read_pseudo_labels(str(out))
    assert set(labels.labels) == set(dataset["table"].index)  # test and validation clips are labelled too
    assert labels.meta["fit_on"] == "train" and labels.meta["fit_splits"] == ["train"]
    assert labels.meta["fit_clips"] == 16 and labels.meta["clips"] == 24

    everything = tmp_path / "all.parquet"
    assert cluster(dataset, checkpoint, everything, "--fit_on", "all") == 0
    fitted_all = pd.read_csv(tmp_path / "all.fit_rows.csv")
    assert set(fitted_all["uid"]) == set(dataset["table"].index)
    assert set(fitted_all["split"]) == {"train", "val", "test"}
    meta = read_pseudo_labels(str(everything)).meta
    assert meta["fit_on"] == "all" and meta["frames_offered"] > labels.meta["frames_offered"]


def test_fitting_on_train_needs_a_training_split(checkpoint: Path, dataset: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    table = dataset["split"] / "test.csv"
    out = tmp_path / "labels.parquet"
    assert cluster(dataset, checkpoint, out, data=table) == 2
    assert f"{table}: --fit_on train fits k-means on the training split" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert cluster(dataset, checkpoint, out, "--fit_on", "all", data=table) == 0
    assert set(pd.read_csv(tmp_path / "labels.fit_rows.csv")["uid"]) == split_uids(dataset, "test")


@pytest.mark.slow
def test_a_runs_frames_are_clustered_after_its_frame_activation_from_its_own_audio(
        checkpoint: Path, dataset: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cluster --run` fits k-means on the frames the run's heads read: a --frame_activation relu run's sample is
    the ReLU of the same run's frames without it, and its centroids are k-means of those ReLU'd frames."""
    relu = tmp_path / "relu"
    assert main(["train", "--model", "hf", "-c", str(checkpoint), "-i", str(dataset["prefix"]), "-d",
                 str(dataset["split"]), "-l", str(dataset["labels"]), "-o", str(relu), "-e", "1", "-bs", "4",
                 "--frame_activation", "relu"]) == 0
    plain = tmp_path / "plain"  # the same weights, read without the activation
    shutil.copytree(relu, plain)
    config = yaml.safe_load((relu / "config.yaml").read_text())
    assert config["classifier"]["frame_activation"] == "relu"
    config["classifier"]["frame_activation"] = "none"
    (plain / "config.yaml").write_text(yaml.safe_dump(config))

    fitted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    kmeans = engine._kmeans

    def recorded(name: str):
        def fit(sample: np.ndarray, k: int, options: engine.ClusterOptions) -> tuple[np.ndarray, float]:
            centroids, objective = kmeans(sample, k, options)
            fitted[name] = (sample.copy(), centroids)
            return centroids, objective
        return fit

    outs = {}
    for name, run in (("relu", relu), ("plain", plain)):
        monkeypatch.setattr(engine, "_kmeans", recorded(name))
        outs[name] = tmp_path / f"{name}.parquet"
        assert main(["cluster", "--run", str(run), "-i", str(dataset["prefix"]), "-d", str(dataset["split"]),
                     "--out", str(outs[name]), "--num_clusters", "4", "--sample_ratio", "1", "--max_frames",
                     "100000", "--layer", "1", "-bs", "4"]) == 0
    (relu_sample, relu_centroids), (plain_sample, plain_centroids) = fitted["relu"], fitted["plain"]
    assert (plain_sample < 0).any() and relu_sample.shape == plain_sample.shape
    assert np.allclose(relu_sample, np.maximum(plain_sample, 0), atol=1e-5)  # every frame, in the same order
    expected, _ = kmeans(np.maximum(plain_sample, 0), 4, engine.ClusterOptions([4], max_frames=100000))
    assert np.allclose(relu_centroids, expected, atol=1e-4)
    assert not np.allclose(relu_centroids, plain_centroids, atol=1e-2)
    labels = {name: read_pseudo_labels(str(out)) for name, out in outs.items()}
    assert labels["relu"].meta["frame_activation"] == "relu" and labels["plain"].meta["frame_activation"] == "none"
    assert set(labels["relu"].labels) == set(labels["plain"].labels) == set(dataset["table"].index)
    assert any(not np.array_equal(labels["relu"].labels[uid][4], labels["plain"].labels[uid][4])
               for uid in labels["relu"].labels)
    # without -i the run's own audio root is read, as evaluate and extract read it
    monkeypatch.setattr(engine, "_kmeans", kmeans)
    own_root = tmp_path / "own_root.parquet"
    assert main(["cluster", "--run", str(relu), "-d", str(dataset["split"]), "--out", str(own_root),
                 "--num_clusters", "4", "--sample_ratio", "1", "--max_frames", "100000", "--layer", "1",
                 "-bs", "4"]) == 0
    again = read_pseudo_labels(str(own_root)).labels
    assert set(again) == set(labels["relu"].labels)
    assert all(np.array_equal(again[uid][4], labels["relu"].labels[uid][4]) for uid in again)


def test_an_encoders_frames_are_clustered_after_the_frame_activation_given(
        checkpoint: Path, dataset: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """`cluster -c ENCODER --frame_activation relu` fits k-means on the ReLU of the hidden state (the seed's
    cluster.py on a wav2vec2 checkpoint, its iterative pseudo-labelling); beside --run it is refused, as the run's
    own activation is read."""
    samples: dict[str, np.ndarray] = {}
    kmeans = engine._kmeans

    def recorded(name: str):
        def fit(sample: np.ndarray, k: int, options: engine.ClusterOptions) -> tuple[np.ndarray, float]:
            samples[name] = sample.copy()
            return kmeans(sample, k, options)
        return fit

    for name, extra in (("relu", ("--frame_activation", "relu")), ("plain", ())):
        monkeypatch.setattr(engine, "_kmeans", recorded(name))
        assert cluster(dataset, checkpoint, tmp_path / f"{name}.parquet", "--sample_ratio", "1", "--max_frames",
                       "100000", *extra) == 0
        assert read_pseudo_labels(str(tmp_path / f"{name}.parquet")).meta["frame_activation"] == \
            ("relu" if extra else "none")
    assert (samples["plain"] < 0).any()
    assert np.allclose(samples["relu"], np.maximum(samples["plain"], 0), atol=1e-5)  # every frame, in order

    out = tmp_path / "refused.parquet"
    assert main(["cluster", "--run", str(tmp_path), "-d", str(dataset["split"]), "--out", str(out),
                 "--frame_activation", "relu"]) == 2
    assert "--frame_activation relu: --run clusters the frames after the run's own" in capsys.readouterr().err
    assert not out.exists()


def test_a_batchs_frames_are_read_back_once_not_once_per_clip() -> None:
    """Each clip's frames, in order, from one boolean index and one count read of the batch's mask (a read per
    clip made the host wait for the device once per clip)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            self.count += func in (torch.ops.aten.nonzero.default, torch.ops.aten._local_scalar_dense.default)
            return func(*args, **(kwargs or {}))

    states = torch.randn(5, 7, 3)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 2, 5, 1, 4])[:, None]
    with Reads() as reads:
        frames, sizes = engine._frames(lambda inputs, lengths: ([states], mask), {"inputs": None, "lengths": None}, 0)
    assert reads.count <= 1 and sizes == [7, 2, 5, 1, 4]  # .tolist() reads the counts without a scalar per clip
    expected = torch.cat([states[row, :n] for row, n in enumerate(sizes)])
    assert torch.equal(frames, expected)


@pytest.mark.parametrize(("options", "advice"), [
    (engine.ClusterOptions([50], sample_ratio=0.2), "raise --sample_ratio (now 0.2)"),
    (engine.ClusterOptions([50], sample_ratio=1.0), "it holds every frame of the clips: give more audio, or a "
                                                    "smaller K"),
    (engine.ClusterOptions([50], max_frames=10), "raise --max_frames")])
def test_too_few_frames_for_k_name_the_limit_that_held_them(options: engine.ClusterOptions, advice: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"--num_clusters 50: k-means needs at least 50 sampled frames, "
                                                   f"the sample has 10; {advice}")):
        engine._kmeans(np.zeros((10, 3), np.float32), 50, options)
