"""A probe folder read back for its report page: probe.csv (or the layers of probe.json), the learned layer weights
and the feature cache's counts of probe.json, and config.yaml."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from audiotune import storage
from audiotune.outputs import CONFIG_FILE, PROBE_FILE, PROBE_SUMMARY_FILE
from audiotune.report.probe_page import ProbeReport


def is_probe(source: Path) -> bool:
    """Whether ``source`` holds what `audiotune probe` writes."""
    return (source / PROBE_FILE).is_file() or (source / PROBE_SUMMARY_FILE).is_file()


def read_probe(source: Path) -> ProbeReport:
    """Everything the probe page shows; a table without a ``layer`` column is an error naming it."""
    summary: dict = {}
    if (source / PROBE_SUMMARY_FILE).is_file():
        try:
            summary = json.loads((source / PROBE_SUMMARY_FILE).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{source / PROBE_SUMMARY_FILE}: cannot be read as JSON ({err})") from err
        if not isinstance(summary, dict):
            raise ValueError(f"{source / PROBE_SUMMARY_FILE}: expected a JSON object")
    if (source / PROBE_FILE).is_file():
        where = source / PROBE_FILE
        try:
            table = pd.read_csv(where, dtype={"layer": str})
        except (OSError, ValueError) as err:
            raise ValueError(f"{where}: cannot be read as a table ({err})") from err
    else:
        where, table = source / PROBE_SUMMARY_FILE, pd.DataFrame(summary.get("layers") or [])
    if "layer" not in table.columns:
        raise ValueError(f"{where}: no 'layer' column, not a probe table")
    config = source / CONFIG_FILE
    shown = storage.remote_name(str(source.resolve()))  # a bucket's folder by its URL, not this machine's copy
    return ProbeReport(title=f"layer probe: {source.resolve().name}", source=shown,
                       table=table.astype({"layer": str}), config_yaml=config.read_text() if config.is_file() else "",
                       layer_weights=summary.get("layer_weights"), cache=summary.get("feature_cache") or {},
                       weighted_sum=str(summary.get("weighted_sum") or ""))
