"""--compile reduce-overhead: the compiled graphs inductor runs without CUDA graphs are counted with its reasons."""
from __future__ import annotations

from torch._dynamo.utils import counters
from torch._inductor.cudagraph_utils import cudagraphs_log

from audiotune.engine.cuda_graphs import CudaGraphSkips


def test_graphs_run_without_cuda_graphs_are_told_once_with_inductors_reasons() -> None:
    skips = CudaGraphSkips()
    counters["inductor"]["cudagraph_skips"] += 1  # before the run: not its own
    skips.start()
    try:
        assert skips.news("cuda:0") is None
        counters["inductor"]["cudagraph_skips"] += 2
        cudagraphs_log.warning("skipping cudagraphs due to mutated inputs (1 instances)")
        told = skips.news("cuda:0")
        assert told is not None and "2 compiled graph(s) of the training step run without CUDA graphs" in told
        assert "(skipping cudagraphs due to mutated inputs (1 instances))" in told
        assert skips.news("cuda:0") is None  # told once
        counters["inductor"]["cudagraph_skips"] += 1
        assert "(the model is on the CPU: CUDA graphs need a GPU)" in (skips.news("cpu") or "")
    finally:
        skips.stop()
    cudagraphs_log.warning("skipping cudagraphs due to cpu device")  # after the run: not its own
    counters["inductor"]["cudagraph_skips"] += 1
    assert skips.news("cuda:0") is None and not cudagraphs_log.handlers
