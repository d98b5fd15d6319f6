"""``audiotune cluster``: k-means pseudo-labels for every frame of every clip (the targets of --objective ptapt)."""
from __future__ import annotations

import argparse
from pathlib import Path

from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args
from audiotune.cli.flags import ONE_PROCESS_NOTES, add_config_flags, add_out, refuse_other_options
from audiotune.cli.run_flags import add_run_flag, scoring_data
from audiotune.cli.stages import refuse_encoder_flags
from audiotune.cli.values import FlatCounts, cluster_counts, options_of
from audiotune.config import ENCODING
from audiotune.engine.cluster import FIT_ON, POINTS_PER_CENTROID, ClusterOptions
from audiotune.storage import final_path

# The options cluster reads: the table, the encoder read without a run (-c CHECKPOINT --model NAME) and its input
# (whole clips: no crop), the hidden state and its activation, the batch, and where it runs (one device). With --run
# the run's own encoder, input and activation are read instead.
CLUSTER_OPTIONS = (
    "data.prefix", "data.study", "data.data_split_root", "data.seed", "data.na_values", "data.on_error",
    "model.model", "model.checkpoint", "audio.resample_rate", "audio.channel_mode", "audio.channel_select",
    "features", "classifier.layer", "classifier.frame_activation", "train.batch_size",
    "runtime.num_workers", "runtime.features_on", "runtime.precision", "runtime.accelerator", "runtime.devices",
    "runtime.cache_dir", "runtime.audio_cache", "runtime.audio_cache_gb",
)
DEFAULTS = ClusterOptions()  # the defaults the flags show


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_config_flags(parser, CLUSTER_OPTIONS, model=model or "hf", writes_run=False, defaults={"model.model": "hf"},
                     stages=ENCODING, why="cluster reads the frames of a frozen encoder",
                     notes={**ONE_PROCESS_NOTES, "classifier.layer": "; here the hidden state whose frames are "
                            "clustered, with --run as without (as the seed: not the run's own --layer)"})
    add_out(parser, required=True, help="parquet file of frame labels")
    refuse_other_options(parser, "not an option of cluster, which labels every frame of whole "
                                                  "clips with a frozen encoder on one device (its options: "
                                                  "audiotune cluster --help)")
    add_run_flag(parser, required=False, help="trained run directory whose (fine-tuned) encoder makes the frames, "
                                              "after the run's --frame_activation, its audio under the run's own "
                                              "-i/-s unless given (default: the -c encoder as loaded)")
    parser.add_argument("--num_clusters", "--num-clusters", dest="num_clusters", type=cluster_counts,
                        nargs="+", action=FlatCounts, default=DEFAULTS.num_clusters,
                        help=f"cluster counts K, one label sequence each (default "
                             f"{' '.join(map(str, DEFAULTS.num_clusters))}, as the seed system's IEMOCAP recipe; "
                             f"the seed's comma list reads the same)")
    parser.add_argument("--sample_ratio", "--sample-ratio", dest="sample_ratio", type=float,
                        default=DEFAULTS.sample_ratio,
                        help=f"share of each clip's frames offered to the k-means sample (default "
                             f"{DEFAULTS.sample_ratio:g})")
    parser.add_argument("--max_frames", "--max-frames", dest="max_frames", type=int, default=DEFAULTS.max_frames,
                        help="rows of the preallocated k-means sample buffer (memory: rows x dim x 4 bytes; "
                             f"default {POINTS_PER_CENTROID} x the largest K)")
    parser.add_argument("--niter", type=int, default=DEFAULTS.niter,
                        help=f"k-means iterations (default {DEFAULTS.niter})")
    parser.add_argument("--fit_on", "--fit-on", dest="fit_on", choices=FIT_ON, default=DEFAULTS.fit_on,
                        help="clips whose frames k-means is fitted on: train (the default; the training split of -d, "
                             "so no validation or test clip shapes the clusters) or all (every clip of -d; needed "
                             "for one table or a folder of audio). Every clip is labelled either way; the fitted "
                             "ones are listed in OUT_STEM.fit_rows.csv")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.cluster import cluster, fit_rows_path, stats_path
    from audiotune.engine.device import check_one_process

    if args.run:
        refuse_encoder_flags(args)
        if "classifier.frame_activation" in vars(args):
            raise ValueError(f"--frame_activation {vars(args)['classifier.frame_activation']}: --run clusters the "
                             "frames after the run's own --frame_activation; leave it out (it applies to -c)")
    config = config_from_args(args, takes=CLUSTER_OPTIONS)
    check_one_process(config.runtime.devices, command="cluster")
    wanted = options_of(ClusterOptions, args, layer=config.classifier.layer, seed=config.data.seed)
    result = cluster(config, wanted, args.out, args.run, data=scoring_data(args) if args.run else None)
    print(f"k-means fitted on {result['fit_clips']} clips ({' + '.join(result['fit_splits'])}; --fit_on "
          f"{result['fit_on']}; listed in {final_path(fit_rows_path(Path(args.out)))}), all {result['clips']} clips "
          "labelled")
    print(f"{result['sample_frames']} of {result['frames_offered']} offered frames clustered "
          f"(buffer {result['buffer_mib']} MiB)")
    for k, usage in result["clusters"].items():
        print(f"  K={k}: {usage['clusters_used']} clusters used, {usage['empty_clusters']} empty, "
              f"largest {usage['largest_share']:.1%} of {usage['frames']} frames")
    print(f"frame labels: {final_path(args.out)} (statistics: {final_path(stats_path(Path(args.out)))})")


COMMAND = Command(
    "cluster", "k-means pseudo-labels for every frame of every clip (the targets of --objective ptapt)", arguments,
    run, description="Frames of hidden state --layer of an encoder (-c CHECKPOINT, or --run RUN for a trained run's "
                     "fine-tuned encoder) are sampled into a fixed buffer, clustered with faiss k-means for each K, "
                     "then every frame of every clip of -d is assigned. k-means is fitted on the training split "
                     "only unless --fit_on all. Writes uid, k, labels rows to --out (parquet), the cluster usage "
                     "to OUT_STEM.clusters.json and the fitted clips to OUT_STEM.fit_rows.csv.",
    examples="audiotune cluster -c facebook/wav2vec2-base -d split --num_clusters 64 512 4096 --out labels.parquet\n"
             "audiotune cluster --run run -d split --num_clusters 64 --out labels.parquet    (a fine-tuned "
             "encoder's frames)")
