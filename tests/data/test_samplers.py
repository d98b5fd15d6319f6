"""Length-bucketed training batches (``--bucket_sampler``, ``--dynamic_batch``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import small_train_args

from audiotune.cli import main
from audiotune.data.samplers import BucketBatchSampler, DealtBatches, LengthSortedBatches, PaddingRule

LENGTHS = np.random.default_rng(0).integers(1000, 50000, size=203).tolist()


def test_every_clip_once_per_epoch_and_a_new_order_each_epoch() -> None:
    sampler = BucketBatchSampler(LENGTHS, batch_size=8, num_buckets=10, seed=3)
    first = list(sampler)
    assert sorted(i for batch in first for i in batch) == list(range(203))
    assert len(first) == len(sampler) == 26 and sum(len(b) < 8 for b in first) == 1  # 203 = 25 x 8 + 3
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(i for batch in second for i in batch) == list(range(203)) and second != first
    sampler.set_epoch(0)
    assert list(sampler) == first  # seed + epoch fix the order
    assert sum(map(len, BucketBatchSampler(LENGTHS, 8, 10, drop_last=True))) == 200


def test_buckets_batch_similar_lengths() -> None:
    def padding(sampler: BucketBatchSampler) -> float:
        lengths = np.asarray(LENGTHS)
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in sampler) / lengths.sum()

    assert padding(BucketBatchSampler(LENGTHS, 8, num_buckets=50)) < 0.25 * padding(BucketBatchSampler(LENGTHS, 8, 1))


def test_a_seconds_budget_bounds_every_padded_batch() -> None:
    budget = 16000 * 10  # 10 s of audio at 16 kHz, counted padded
    lengths = [*LENGTHS, 200000]  # one clip longer than the budget: a batch of its own
    sampler = BucketBatchSampler(lengths, batch_size=0, num_buckets=20, max_samples=budget)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(204))
    sizes = [len(b) * max(lengths[i] for i in b) for b in batches]
    assert all(size <= budget for size, b in zip(sizes, batches) if b != [203]) and [203] in batches
    assert len({len(b) for b in batches}) > 3  # short clips in big batches, long ones in small


def test_processes_share_the_batches_and_run_the_same_steps() -> None:
    batches = BucketBatchSampler(LENGTHS, 8, 10)
    ranks = [list(DealtBatches(batches, num_replicas=3, rank=r, pad=False)) for r in range(3)]
    assert [len(r) for r in ranks] == [8, 8, 8]  # 26 batches dealt to 3 processes: 8 steps each
    seen = [i for r in ranks for batch in r for i in batch]
    assert len(seen) == len(set(seen))  # no clip twice; the 2 batches that do not go round are left out
    dealt = [batch for step in zip(*ranks) for batch in step]
    assert dealt == list(batches)[:24]


@pytest.mark.slow
def test_training_with_buckets_and_a_budget(uid_dataset: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(small_train_args(uid_dataset, run, "--bucket_sampler", "--num_buckets", "3",
                                 "--dynamic_batch", "1.5", "--clip_length", "0")) == 0
    log = pd.read_csv(run / "logs" / "metrics.csv")
    # 16 training clips of 0.6-0.75 s: 2 per 1.5 s padded batch, so 8 steps (not 4 of -bs 4)
    assert log["step"].max() + 1 == 8 and json.loads((run / "metrics.json").read_text())["trained"]
    with pytest.raises(SystemExit):
        main(small_train_args(uid_dataset, tmp_path / "bad", "--dynamic_batch", "x"))


def test_length_sorted_batches_stay_within_the_tolerance() -> None:
    lengths = [1000, 1015, 1030, 1000, 2000, 1040, 2010, 1000]
    within = list(LengthSortedBatches(lengths, batch_size=3, tolerance=0.02))
    assert within == [[0, 3, 7], [1, 2], [5], [4, 6]]  # sorted by length, ties in table order
    assert all(max(lengths[i] for i in b) <= min(lengths[i] for i in b) * 1.02 for b in within)
    equal = list(LengthSortedBatches(lengths, batch_size=8))
    assert all(len({lengths[i] for i in b}) == 1 for b in equal) and len(equal) == 6
    assert sorted(i for b in equal for i in b) == list(range(len(lengths)))
    with pytest.raises(ValueError, match="fraction >= 0"):
        PaddingRule(False, -0.1)


def test_a_fixed_size_epoch_leaves_out_other_clips_each_epoch_never_the_longest_every_time() -> None:
    """``drop_last`` leaves out the ``clips mod batch_size`` clips of a last short batch, drawn from all clips
    anew each epoch: walking the buckets from the shortest, that batch would always hold the longest clips."""
    sampler = BucketBatchSampler(LENGTHS, 8, num_buckets=50, drop_last=True)  # 203 = 25 x 8 + 3
    left_out = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        seen = [i for batch in batches for i in batch]
        assert len(batches) == len(sampler) == 25 and {len(b) for b in batches} == {8} and len(set(seen)) == 200
        left_out.append(set(range(203)) - set(seen))
    assert set.intersection(*left_out) == set()  # no clip left out of every epoch
    longest = set(np.argsort(LENGTHS)[-3:].tolist())
    assert sum(longest <= epoch for epoch in left_out) < 5  # the 3 longest together: rarely, not every epoch
    assert len(set.union(*left_out)) > 60  # the left-out clips spread over the set


def test_drawn_rows_carry_the_seed_epoch_row_and_times_drawn_through_pickling() -> None:
    import pickle

    from audiotune.data.draws import DrawnBatches, DrawnRow
    from audiotune.data.samplers import BalancedSampler, TrainingBatches

    batches = DrawnBatches(TrainingBatches(BalancedSampler(np.array([0, 0, 0, 1]), "oversample", seed=5), 2), 5)
    batches.set_epoch(2)
    rows = [row for batch in batches for row in batch]
    assert len(rows) == 6 and [row.draw[:2] for row in rows] == [(5, 2)] * 6
    assert sorted(row.draw[2:] for row in rows if row == 3) == [(3, 0), (3, 1), (3, 2)]  # oversampled: new draws
    assert batches.sampler is batches and batches.batches.sampler.epoch == 2  # Lightning's set_epoch reaches it
    copy = pickle.loads(pickle.dumps(rows[0]))  # as a loader worker receives it
    assert isinstance(copy, DrawnRow) and copy == rows[0] and copy.draw == rows[0].draw
