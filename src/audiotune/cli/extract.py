"""``audiotune extract``: embeddings of every row to parquet, from a trained run, a pretrain run, or a pretrained
encoder named by ``-c CHECKPOINT --model NAME`` (no run)."""
from __future__ import annotations

import argparse

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args
from audiotune.cli.flags import (
    add_config_flags,
    add_option_flag,
    add_out,
    refuse_flags_of,
    refuse_other_options,
    spellings,
)
from audiotune.cli.run_flags import add_run_options, add_scoring_flags, scoring_data, scoring_options
from audiotune.cli.stages import ENCODER_OPTIONS, as_flag, refuse_encoder_flags
from audiotune.config import ENCODING, SECTIONS
from audiotune.models.classifier import EMBEDDING_TYPES
from audiotune.outputs import embeddings_file
from audiotune.storage import final_path


def _embedding_type(value: str) -> str:
    """``--embedding_type``; the seeds' default ``None`` is said to be the flag left out."""
    if value == "None":
        raise argparse.ArgumentTypeError("None, the seeds' default, is the flag left out: ft for a trained run, pt "
                                         "for an encoder, as the seeds")
    return value


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_scoring_flags(parser, run_required=False)
    add_out(parser, short=False,
            help="parquet file (default RUN/embeddings_TYPE.parquet; required without --run)")
    parser.add_argument(*spellings("embedding_type"), dest="embedding_type", choices=EMBEDDING_TYPES,
                        type=_embedding_type,
                        help="pt: one hidden state; wt: the weighted sum of all (an encoder without heads: their "
                             "average); st: the shared dense layer; ft: the heads' first dense layers (default: ft "
                             "for a trained run, pt for an encoder)")
    add_run_options(parser, ("classifier.layer",), {"layer": "; here the hidden state of pt embeddings"})
    # beside the frame poolings, a backbone's token pools (SSAST's cls, avgtok), which the backbone checks
    add_option_flag(parser, "classifier.pooling_mode", of_run=True, choices=None, metavar="MODE",
                    help="pooling over frames: mean, sum or max; cls or avgtok: the mean of SSAST's cls token(s) or "
                         "patch tokens (pt embeddings; the seed's --task ft_cls / ft_avgtok, also accepted); ft "
                         "embeddings: how the heads merge, mean or sum (default: the run's pooling; for ft "
                         "embeddings mean, as the seeds)")
    crop = "; with --run, the crop of every clip embedded (there its default is the run's crop of scored clips)"
    add_config_flags(parser, ENCODER_OPTIONS, model=model, writes_run=False, stages=ENCODING,
                     why="extract runs the encoder as it is", notes=dict.fromkeys(EMBEDDED_CROP, crop))
    refuse_flags_of(parser, spellings("exp_dir", ("-o",)), "the seeds' folder of the embeddings; extract writes one "
                                                         "parquet file: --out FILE.parquet (default "
                                                         "RUN/embeddings_TYPE.parquet)")
    refuse_other_options(parser, "not an option of extract, which runs the encoder as it is (an "
                                                   "encoder without a run: -c CHECKPOINT --model NAME and its input "
                                                   "options)")


def default_outputs(args: argparse.Namespace) -> None:
    if args.embedding_type is None:
        from audiotune.models.encoder import is_encoder_run

        args.embedding_type = "pt" if args.run is None or is_encoder_run(args.run) else "ft"
    if args.out is None and args.run is None:
        raise ValueError("--out: give the parquet file to write (there is no --run to write it into)")
    args.out = args.out or storage.join(args.run, embeddings_file(args.embedding_type))


def _seed_task_pooling(args: argparse.Namespace) -> None:
    """With a run, the SSAST seed's ``--task ft_cls | ft_avgtok`` chose the tokens pt embeddings pool."""
    task = vars(args).pop("options.task", None)
    if task is None:
        return
    if not task.startswith("ft_"):
        raise ValueError(f"--task {task}: at extraction the seed's --task chose the tokens pt embeddings pool: "
                         "ft_cls or ft_avgtok (the same as --pooling_mode cls or avgtok)")
    pool = task.removeprefix("ft_")
    if args.pooling_mode not in (None, pool):
        raise ValueError(f"--task {task} and --pooling_mode {args.pooling_mode} choose two poolings; give one")
    args.pooling_mode = pool


# beside --run, the crop of the clips embedded: the seeds' extraction read --clip_length anew
EMBEDDED_CROP = ("audio.clip_length", "audio.eval_clip_length")


def _embedded_crop(args: argparse.Namespace) -> float | None:
    """With a run, ``--clip_length`` or ``--eval_clip_length``: the crop of every clip embedded (None: the run's)."""
    given = {key: vars(args).pop(key) for key in EMBEDDED_CROP if key in vars(args)}
    if len(set(given.values())) > 1:
        raise ValueError(f"{' and '.join(as_flag(key.partition('.')[2], value) for key, value in given.items())}: "
                         "beside --run both set the crop of the clips embedded; give one")
    return next(iter(given.values()), None)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.extract import extract_embeddings

    encoder, crop = None, None
    if args.run is not None:
        _seed_task_pooling(args)
        crop = _embedded_crop(args)
        refuse_encoder_flags(args)
    else:
        if "model.model" not in vars(args) and not args.config:
            raise ValueError("extract without --run: name the pretrained encoder with -c CHECKPOINT --model NAME")
        # every section's options; a config file's backbone options that act only in training go back to defaults
        encoder = config_from_args(args, takes=tuple(SECTIONS))
    data = scoring_data(args, bucket_read=encoder is not None)  # an encoder's config reads -b as train's does
    path = extract_embeddings(args.run, args.data_split_root, args.out, args.embedding_type, args.layer,
                              args.pooling_mode, data=data, encoder=encoder, clip_seconds=crop,
                              **scoring_options(args))
    if path is not None:  # None: another process of a multi-process run; rank 0 reports
        print(f"embeddings: {final_path(path)}")


COMMAND = Command("extract", "write embeddings to parquet", arguments, run, default_outputs=default_outputs,
                  examples="audiotune extract --run run -d table.csv --out embeddings.parquet\n"
                           "audiotune extract --run run -d table.csv --embedding_type pt --out emb.parquet\n"
                           "audiotune extract --run run -d table.csv --clip_length 0 --out whole_clips.parquet\n"
                           "audiotune extract -c facebook/wav2vec2-base --model hf -d table.csv --layer 6 "
                           "--out emb.parquet")
