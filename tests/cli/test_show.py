"""What commands print: libraries' warnings and transformers' loading report only with -v."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from conftest import HF_TINY

from audiotune.cli.show import third_party_quiet


def warn_from(filename: str) -> None:
    warnings.warn_explicit("a note from below", FutureWarning, filename, 1, module="somewhere")


@pytest.mark.parametrize("verbose", [False, True])
def test_library_warnings_only_with_verbose(verbose: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")  # as a library may leave the filters: ours decide inside
        with third_party_quiet(verbose):
            warnings.simplefilter("always") if verbose else None
            warn_from("/site-packages/torch/utils/_pytree.py")
            warn_from("/site-packages/sklearn/metrics/_classification.py")
            warn_from("/src/audiotune/engine/train.py")
    files = [Path(w.filename).parts[-2] for w in caught]
    assert files == (["utils", "metrics", "engine"] if verbose else ["engine"])


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("verbose", [False, True])
def test_transformers_load_report_only_with_verbose(verbose: bool, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    # a CTC checkpoint: its head's weights are unexpected in the bare encoder
    transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**HF_TINY, vocab_size=8)).save_pretrained(tmp_path)
    collect = Collect()
    logging.getLogger("transformers").addHandler(collect)
    try:
        with third_party_quiet(verbose):
            transformers.AutoModel.from_pretrained(tmp_path)
    finally:
        logging.getLogger("transformers").removeHandler(collect)
    assert any("UNEXPECTED" in message for message in collect.messages) is verbose
