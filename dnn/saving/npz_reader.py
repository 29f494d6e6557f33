"""Reading an ``.npz`` archive without trusting it: its zip directory and each member's ``.npy``
header are checked before a byte of data is read, so no file can make dnn allocate more than
the arrays it honestly holds.

Every problem is a :class:`CheckpointError` naming the file: members that the caller does not
expect, encryption, compression other than deflate (or deflate that shrinks its data
implausibly far: a bomb), damaged or pickled headers, and data that is shorter or longer than
its header says.
"""

from __future__ import annotations

import math
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dnn.errors import CheckpointError

MEMBER_NAME = re.compile(r"[A-Za-z0-9_]{1,200}\.npy")
MAX_HEADER_BYTES = 1 << 16
# Arrays of floats compress by a few per cent; a member that inflates more than this is a bomb.
MAX_DEFLATE_RATIO = 100


class NpzReader:
    """The members of the ``.npz`` at ``path`` whose names (without ``.npy``) ``expected``
    accepts; any other member makes the whole file refused.  Use as a context manager."""

    def __init__(self, path: Path, expected, what: str = "a dnn checkpoint"):
        self.path, self.what = path, what
        try:
            self._zip = zipfile.ZipFile(path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
                RuntimeError) as error:
            raise CheckpointError(f"{path} is not {what} ({error})") from None
        self._infos = {}
        for info in infos:
            name = info.filename
            if not MEMBER_NAME.fullmatch(name) or not expected(name[:-4]):
                self.close()
                raise CheckpointError(f"{path} is not {what}: it holds a member {name!r}, "
                                      f"which {what} does not")
            problem = _member_problem(info)
            if problem or name[:-4] in self._infos:
                self.close()
                raise CheckpointError(f"{path} is damaged: member {name!r} "
                                      f"{problem or 'appears twice'}")
            self._infos[name[:-4]] = info

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        self._zip.close()

    @property
    def names(self) -> set:
        return set(self._infos)

    def header(self, name: str) -> tuple[tuple, np.dtype]:
        """``(shape, dtype)`` of member ``name``, its size checked against the zip's."""
        with self._open(name) as member:
            return self._read_header(name, member)[:2]

    def array(self, name: str, shape: tuple | None = None) -> np.ndarray:
        """Member ``name`` as a new array, refused unless its header has ``shape`` (when
        given) and its data is exactly what the header says."""
        with self._open(name) as member:
            found, dtype, fortran = self._read_header(name, member)
            if shape is not None and found != tuple(shape):
                raise CheckpointError(f"{self.path} is damaged: {name} has shape {found}, "
                                      f"not {tuple(shape)}")
            try:
                data = member.read(math.prod(found) * dtype.itemsize)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
                raise CheckpointError(f"{self.path} is damaged: {name} cannot be read "
                                      f"({error})") from None
        return np.frombuffer(data, dtype).reshape(found, order="F" if fortran else "C").copy()

    def _open(self, name: str):
        if name not in self._infos:
            raise CheckpointError(f"{self.path} is damaged: it has no member {name}.npy")
        return self._zip.open(self._infos[name])

    def _read_header(self, name: str, member) -> tuple[tuple, np.dtype, bool]:
        try:
            version = np.lib.format.read_magic(member)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(member, max_header_size=MAX_HEADER_BYTES)
        except Exception as error:  # a damaged header raises anything the parser can
            raise CheckpointError(f"{self.path} is damaged: the header of {name} cannot be "
                                  f"read ({type(error).__name__}: {error})") from None
        if dtype.hasobject:
            raise CheckpointError(f"{self.path} is damaged: {name} holds Python objects, "
                                  "which dnn never loads")
        size = math.prod(shape) * dtype.itemsize + member.tell()
        if size != self._infos[name].file_size:
            raise CheckpointError(f"{self.path} is damaged: {name} declares {shape} {dtype} "
                                  f"({size:,} bytes with its header) but holds "
                                  f"{self._infos[name].file_size:,}")
        return tuple(shape), dtype, fortran


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why the zip directory entry ``info`` cannot be read safely, or None."""
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"uses compression method {info.compress_type}, not stored or deflate"
    if (info.compress_type == zipfile.ZIP_DEFLATED
            and info.file_size > MAX_DEFLATE_RATIO * info.compress_size + (1 << 16)):
        return (f"inflates from {info.compress_size:,} to {info.file_size:,} bytes, more than "
                "any array of weights does")
    return None
