"""Reading IDX files (the format of MNIST and Fashion-MNIST), trusting no byte unchecked.

An IDX file is a 4-byte magic number ``0 0 <dtype code> <ndim>``, ``ndim`` big-endian uint32
dimensions, then the data in C order.  Files may be gzip-compressed (detected by content, not by
name).  Every problem is a :class:`DataError` that names the file, found before more is read
than the header promises.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from dnn.errors import DataError

MAX_DATA_BYTES = 1 << 30  # MNIST's largest file holds 47 MB
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path):
    """The file opened for reading, through gzip when its content starts as gzip does."""
    try:
        file = open(path, "rb")
        compressed = file.read(2) == GZIP_MAGIC
        file.seek(0)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    return gzip.GzipFile(fileobj=file, mode="rb") if compressed else file


def _read(stream, count: int, path) -> bytes:
    """Exactly ``count`` bytes or fewer at the end; damaged gzip is a DataError."""
    try:
        return stream.read(count)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} is a damaged gzip file (truncated or corrupt: {error}); "
                        "delete it and download it again") from None


def read_idx(path: Path, expected_shape: tuple) -> np.ndarray:
    """Read and validate one IDX file (gzip or raw); ``expected_shape`` gives each dimension
    or None where any size is allowed (e.g. ``(None, 28, 28)``).

    Memory stays bounded by what the header promises: the header is read and checked first,
    then exactly the bytes it announces, then one more to find trailing data, so neither a
    gzip bomb nor a huge file behind a valid header is ever read whole.
    """
    with _open(path) as stream:
        head = _read(stream, 4, path)
        if len(head) < 4 or head[0] != 0 or head[1] != 0:
            raise DataError(f"{path} is not an IDX file (bad magic number "
                            f"{head.hex() or 'empty'})")
        dtype_code, ndim = head[2], head[3]
        if dtype_code not in IDX_DTYPES:
            raise DataError(f"{path} has an unknown IDX data type code 0x{dtype_code:02x}")
        if ndim != len(expected_shape):
            raise DataError(f"{path} has {ndim} dimensions; expected {len(expected_shape)}")
        dimensions = _read(stream, 4 * ndim, path)
        if len(dimensions) < 4 * ndim:
            raise DataError(f"{path} is truncated inside its header")
        shape = tuple(int(d) for d in np.frombuffer(dimensions, ">u4"))
        for size, expected in zip(shape, expected_shape):
            if expected is not None and size != expected:
                raise DataError(f"{path} has shape {shape}; expected {_describe(expected_shape)}")
        dtype = np.dtype(IDX_DTYPES[dtype_code])
        needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
        header = 4 + 4 * ndim
        if needed > MAX_DATA_BYTES:
            raise DataError(f"{path} has shape {shape}: {needed:,} bytes of data, more than "
                            f"the {MAX_DATA_BYTES:,} an IDX file may hold here")
        if not isinstance(stream, gzip.GzipFile):
            size = os.fstat(stream.fileno()).st_size
            if size != header + needed:
                raise DataError(f"{path} holds {size} bytes; its header {shape} needs "
                                f"{header + needed} "
                                f"({'truncated' if size < header + needed else 'trailing data'})")
        data = _read(stream, needed, path)
        if len(data) < needed:
            raise DataError(f"{path} holds {header + len(data)} bytes; its header {shape} "
                            f"needs {header + needed} (truncated)")
        if _read(stream, 1, path):
            raise DataError(f"{path} holds more than the {header + needed} bytes its header "
                            f"{shape} needs (trailing data)")
    return np.frombuffer(data, dtype).reshape(shape)


def _describe(shape: tuple) -> str:
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` (uint8) as an IDX file; used to make test data and by plugin tests."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.tobytes()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)
