"""``audiotune extract``: embeddings of every row to parquet."""
from __future__ import annotations

import argparse

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.flags import add_path, add_scoring_flags, scoring_data, spellings
from audiotune.cli.show import shown
from audiotune.outputs import embeddings_file
from audiotune.storage import Role


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_scoring_flags(parser)
    add_path(parser, "--out", role=Role.OUTPUT_FILE, help="parquet file (default RUN/embeddings_TYPE.parquet)")
    parser.add_argument(*spellings("embedding_type"), dest="embedding_type", default="ft",
                        choices=("pt", "wt", "st", "ft"))
    parser.add_argument("--layer", type=int, help="hidden state for pt embeddings (default: the run's)")
    parser.add_argument(*spellings("pooling_mode", ("-pm",)), dest="pooling_mode", choices=("mean", "sum", "max"))


def default_outputs(args: argparse.Namespace) -> None:
    args.out = args.out or storage.join(args.run, embeddings_file(args.embedding_type))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.extract import extract_embeddings

    path = extract_embeddings(args.run, args.data_split_root, args.out, args.embedding_type, args.layer,
                              args.pooling_mode, args.batch_size, args.num_workers, args.on_error,
                              args.accelerator, args.devices, args.precision, scoring_data(args),
                              vars(args).get("runtime.num_nodes"))
    if path is not None:  # None: another process of a multi-process run; rank 0 reports
        print(f"embeddings: {shown(path)}")


COMMAND = Command("extract", "write embeddings to parquet", arguments, run, default_outputs=default_outputs,
                  examples="audiotune extract --run run -d table.csv --out embeddings.parquet\n"
                           "audiotune extract --run run -d table.csv --embedding_type pt --layer 6 --out emb.parquet")
