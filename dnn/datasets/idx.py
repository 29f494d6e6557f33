"""Reading IDX files (the format of MNIST and Fashion-MNIST), trusting no byte unchecked.

An IDX file is a 4-byte magic number ``0 0 <dtype code> <ndim>``, ``ndim`` big-endian uint32
dimensions, then the data in C order.  Files may be gzip-compressed (detected by content, not by
name).  Every problem is a :class:`DataError` that names the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from dnn.errors import DataError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} is a damaged gzip file (truncated or corrupt: {error}); "
                        "delete it and download it again") from None


def parse_idx(data: bytes, path, expected_shape: tuple) -> np.ndarray:
    """The array in IDX ``data`` read from ``path``; ``expected_shape`` gives each dimension
    or None where any size is allowed (e.g. ``(None, 28, 28)``)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in IDX_DTYPES:
        raise DataError(f"{path} has an unknown IDX data type code 0x{dtype_code:02x}")
    if ndim != len(expected_shape):
        raise DataError(f"{path} has {ndim} dimensions; expected {len(expected_shape)}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    for size, expected in zip(shape, expected_shape):
        if expected is not None and size != expected:
            raise DataError(f"{path} has shape {shape}; expected {_describe(expected_shape)}")
    dtype = np.dtype(IDX_DTYPES[dtype_code])
    expected_bytes = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected_bytes:
        raise DataError(f"{path} holds {len(data)} bytes; its header {shape} needs "
                        f"{expected_bytes} ({'truncated' if len(data) < expected_bytes else 'trailing data'})")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def _describe(shape: tuple) -> str:
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"


def read_idx(path: Path, expected_shape: tuple) -> np.ndarray:
    """Read and validate one IDX file (gzip or raw)."""
    return parse_idx(read_bytes(path), path, expected_shape)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` (uint8) as an IDX file; used to make test data and by plugin tests."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.tobytes()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)
