"""``audiotune export``: a trained run's classifier as ONNX or TorchScript."""
from __future__ import annotations

import argparse

from audiotune.cli.command import Command
from audiotune.cli.flags import add_out
from audiotune.cli.run_flags import add_run_flag
from audiotune.engine.export import FORMATS


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_run_flag(parser)
    parser.add_argument("--format", default=FORMATS[0], choices=FORMATS, help=f"default {FORMATS[0]}")
    add_out(parser, required=True,
             help="model file to write, e.g. model.onnx (FILE.json beside it)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.export import export_run, sidecar_path
    from audiotune.storage import final_path

    described = export_run(args.run, args.format, args.out)
    shapes = ", ".join(f"{o['name']} ({', '.join(map(str, o['shape']))})" for o in described["outputs"])
    print(f"{args.format} model: {final_path(args.out)} ({described['sample_rate']} Hz waveforms in; {shapes})")
    print(f"description: {final_path(sidecar_path(args.out))}")


COMMAND = Command(
    "export", "a trained run's classifier as ONNX or TorchScript: waveforms in, logits and embeddings out", arguments,
    run, description="Writes FILE (inputs: waveforms (batch, samples) float32 at the run's sample rate, lengths "
                     "(batch,) int64; outputs: logits, embedding_ft, embedding_pooled; any batch size and length) "
                     "and FILE.json, which describes inputs, preprocessing, outputs and classes.",
    examples="audiotune export --run run --out deploy/model.onnx\n"
             "audiotune export --run run --format torchscript --out deploy/model.pt")
