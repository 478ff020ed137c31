"""Ways to damage a dataset or a run on disk (pyarrow, Pillow and json only: no vla_align import)."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

DATA_FILE = "data/chunk-000/file-000.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
TASKS_FILE = "meta/tasks.parquet"
INFO_FILE = "meta/info.json"
IMAGE_KEY = "observation.image"

# --- JSON files --------------------------------------------------------------------------------


def edit_json(file: Path, edit: Callable[[Any], Any]) -> None:
    """Load, edit (in place, or return a replacement), write back (NaN / Infinity allowed)."""
    data = json.loads(file.read_text())
    out = edit(data)
    file.write_text(json.dumps(data if out is None else out, indent=2) + "\n")


def set_key(file: Path, dotted: str, value: Any) -> None:
    """Set ``a/b/c`` in a JSON file (creating nothing: every parent must exist; "/" separates the keys
    because feature names contain dots)."""

    def edit(data: dict[str, Any]) -> None:
        *parents, leaf = dotted.split("/")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value

    edit_json(file, edit)


def del_key(file: Path, dotted: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        *parents, leaf = dotted.split("/")
        node = data
        for p in parents:
            node = node[p]
        del node[leaf]

    edit_json(file, edit)


def info_set(dotted: str, value: Any) -> Callable[[Path], None]:
    return lambda ds: set_key(ds / INFO_FILE, dotted, value)


def info_del(dotted: str) -> Callable[[Path], None]:
    return lambda ds: del_key(ds / INFO_FILE, dotted)


# --- raw bytes ---------------------------------------------------------------------------------


def truncate(file: Path, fraction: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * fraction)])


def garbage(file: Path, text: bytes = b"this is not what it claims to be\n") -> None:
    file.write_bytes(text)


def symlink_loop(file: Path) -> None:
    """Replace ``file`` (or directory) by a symlink to itself."""
    if file.is_dir() and not file.is_symlink():
        import shutil

        shutil.rmtree(file)
    elif file.exists() or file.is_symlink():
        file.unlink()
    os.symlink(file.name, file)


# --- parquet tables ----------------------------------------------------------------------------


def edit_table(file: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    table = pq.read_table(file)
    pq.write_table(edit(table), file)


def replace_column(table: pa.Table, name: str, values: list[Any], type_: pa.DataType | None = None) -> pa.Table:
    i = table.schema.get_field_index(name)
    column = pa.array(values, type=type_ or table.schema.field(name).type)
    return table.set_column(i, pa.field(name, column.type), column)


def set_rows(
    file: Path, column: str, value: Any, rows: Callable[[pa.Table], list[int]], type_: pa.DataType | None = None
) -> None:
    """Set ``column`` to ``value`` in the selected rows (other rows keep theirs, in ``type_`` if given)."""

    def edit(table: pa.Table) -> pa.Table:
        values = table[column].to_pylist()
        for r in rows(table):
            values[r] = value
        return replace_column(table, column, values, type_)

    edit_table(file, edit)


def first_row(table: pa.Table) -> list[int]:
    return [0]


def episode_rows(episode: int) -> Callable[[pa.Table], list[int]]:
    return lambda t: [i for i, e in enumerate(t["episode_index"].to_pylist()) if e == episode]


def drop_column(file: Path, name: str) -> None:
    edit_table(file, lambda t: t.drop_columns([name]))


def duplicate_rows(file: Path, rows: Callable[[pa.Table], list[int]]) -> None:
    edit_table(file, lambda t: pa.concat_tables([t, t.take(pa.array(rows(t)))]))


# --- images ------------------------------------------------------------------------------------


def png(height: int, width: int, value: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def frame_bytes(ds: Path, row: int = 0) -> bytes:
    table = pq.read_table(ds / DATA_FILE, columns=[IMAGE_KEY])
    data: bytes = table[IMAGE_KEY].combine_chunks().field("bytes")[row].as_py()
    return data


def set_frame(ds: Path, data: bytes | None, row: int = 0) -> None:
    """Replace the encoded image of one frame (keeps the struct<bytes, path> column type)."""

    def edit(table: pa.Table) -> pa.Table:
        values = table[IMAGE_KEY].to_pylist()
        values[row] = {"bytes": data, "path": values[row].get("path")}
        return replace_column(table, IMAGE_KEY, values)

    edit_table(ds / DATA_FILE, edit)


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    """The same PNG with an IHDR claiming another size (CRC fixed, so decoders trust the header)."""
    ihdr = bytearray(data[16:29])
    struct.pack_into(">II", ihdr, 0, width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return data[:16] + bytes(ihdr) + crc + data[33:]
