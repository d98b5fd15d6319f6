"""The parts of a multi-process scoring command (:mod:`audiotune.engine.shards`): each process's rows in an Arrow
file, every row with its place in the input (:data:`POSITION`), read back memory-mapped and put back in input order
(:func:`in_input_order`; into one parquet file: :func:`write_in_input_order`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audiotune.atomic import atomic_path

POSITION = "position"  # the column of a part holding each row's place in the input (split after split)
MERGE_ROWS = 4096  # rows taken at a time from the memory-mapped parts into the merged parquet file


def read_part(path: Path) -> pa.Table:
    """A part written with :func:`part_writer`, memory-mapped (its rows stay on disk until used)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def part_schema(schema: pa.Schema) -> pa.Schema:
    """The columns of a part of rows of ``schema``: the :data:`POSITION` column first."""
    return pa.schema([(POSITION, pa.int64()), *schema])


def part_writer(path: Path, schema: pa.Schema) -> pa.ipc.RecordBatchFileWriter:
    """A writer of a part's rows (:func:`part_schema` of ``schema``) in Arrow's file format, read back
    memory-mapped."""
    return pa.ipc.new_file(str(path), part_schema(schema))


def in_input_order(parts: list[Path]) -> tuple[pa.Table, np.ndarray]:
    """The rows of all ``parts`` (memory-mapped, without the position column) and the order that puts them back in
    input order."""
    table = pa.concat_tables([read_part(path) for path in parts])
    order = np.argsort(table.column(POSITION).to_numpy(), kind="stable")
    return table.drop_columns([POSITION]), order


def write_in_input_order(parts: list[Path], out: Path, metadata: dict[bytes, bytes] | None = None) -> None:
    """One parquet file at ``out`` (atomically) of every part's rows in input order, a few thousand rows at a time;
    ``metadata``: its schema's."""
    table, order = in_input_order(parts)
    table = table.replace_schema_metadata(metadata)
    with atomic_path(out) as partial, pq.ParquetWriter(partial, table.schema) as writer:
        for start in range(0, len(order), MERGE_ROWS):
            writer.write_table(table.take(order[start:start + MERGE_ROWS]))
