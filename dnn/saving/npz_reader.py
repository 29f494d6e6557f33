"""Reading an ``.npz`` archive without trusting it: its zip directory and each member's ``.npy``
header are checked before a byte of data is read, so no file can make dnn allocate more than
the arrays it honestly holds.

Every claim is bounded by what the file can hold, as safetensors bounds its offsets by the
file: a member's compressed bytes must lie between its local header and the next member's (or
the zip directory), so that members never overlap and together never exceed the file; a stored
member is as large as its compressed bytes; a deflated one inflates at most
MAX_DEFLATE_RATIO times, and is inflated once, CHUNK_BYTES at a time and keeping nothing, to
prove that it holds what it claims before memory is taken for its array.

Every problem is a :class:`CheckpointError` naming the file: members that the caller does not
expect, encryption, compression other than deflate (or deflate that shrinks its data
implausibly far: a bomb), sizes the file cannot hold or its local headers contradict, damaged
or pickled headers, and data that is shorter or longer than its header says.
"""

from __future__ import annotations

import math
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dnn.errors import CheckpointError

MEMBER_NAME = re.compile(r"[A-Za-z0-9_]{1,200}\.npy")
MAX_HEADER_BYTES = 1 << 16
# Arrays of floats compress by a few per cent; a member that inflates more than this is a bomb.
MAX_DEFLATE_RATIO = 100
CHUNK_BYTES = 1 << 20
# signature, version, flags, method, time, date, CRC, sizes, name and extra field lengths
LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
LOCAL_SIGNATURE = b"PK\x03\x04"
SIZES_FOLLOW_DATA = 0x08  # flag: the local header's sizes are zero, a data descriptor has them
ZIP64_SIZE = 0xFFFFFFFF  # a local header's size that its zip64 extra field holds instead
READ_FAILURES = (zipfile.BadZipFile, OSError, EOFError, zlib.error)


class NpzReader:
    """The members of the ``.npz`` at ``path`` whose names (without ``.npy``) ``expected``
    accepts; any other member makes the whole file refused.  Use as a context manager."""

    def __init__(self, path: Path, expected, what: str = "a dnn checkpoint"):
        self.path, self.what = path, what
        try:
            self._file = open(path, "rb")
        except OSError as error:
            raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
        self._zip = None
        try:
            self._zip = zipfile.ZipFile(self._file)
            self._infos = self._checked_members(self._zip.infolist(), expected)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
                RuntimeError) as error:
            self.close()
            raise CheckpointError(f"{path} is not {what} ({error})") from None
        except CheckpointError:
            self.close()
            raise

    def _checked_members(self, infos: list, expected) -> dict:
        """``{name without .npy: ZipInfo}`` of the directory ``infos``, each entry checked by
        its name, then by its directory entry alone, then against the bytes of the file."""
        members = {}
        for info in infos:
            name = info.filename
            if not MEMBER_NAME.fullmatch(name) or not expected(name[:-4]):
                raise CheckpointError(f"{self.path} is not {self.what}: it holds a member "
                                      f"{name!r}, which {self.what} does not")
            problem = _member_problem(info) or ("appears twice" if name[:-4] in members
                                                else None)
            if problem:
                raise CheckpointError(f"{self.path} is damaged: member {name!r} {problem}")
            members[name[:-4]] = info
        ends = sorted(info.header_offset for info in infos)[1:] + [self._zip.start_dir]
        for info, end in zip(sorted(infos, key=lambda info: info.header_offset), ends):
            problem = self._layout_problem(info, end)
            if problem:
                raise CheckpointError(f"{self.path} is damaged: member {info.filename!r} "
                                      f"{problem}")
        return members

    def _layout_problem(self, info: zipfile.ZipInfo, end: int) -> str | None:
        """Why member ``info``, whose bytes must end by offset ``end`` (the next member's
        header, or the zip directory), cannot hold what its directory entry claims, or None."""
        self._file.seek(info.header_offset)
        raw = self._file.read(LOCAL_HEADER.size)
        if len(raw) < LOCAL_HEADER.size or not raw.startswith(LOCAL_SIGNATURE):
            return (f"has no local header at offset {info.header_offset:,}, where the zip "
                    "directory puts it")
        _, _, flags, *_, compressed, size, name_length, extra_length = LOCAL_HEADER.unpack(raw)
        start = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
        room = max(0, end - start)
        if info.compress_size > room:
            return (f"claims {info.compress_size:,} bytes of data; the file holds at most "
                    f"{room:,} for it")
        local_sizes = not flags & SIZES_FOLLOW_DATA and ZIP64_SIZE not in (compressed, size)
        if local_sizes and (compressed, size) != (info.compress_size, info.file_size):
            return (f"has a local header claiming {compressed:,} bytes that inflate to "
                    f"{size:,}; the zip directory says {info.compress_size:,} and "
                    f"{info.file_size:,}")
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._file.close()

    @property
    def names(self) -> set:
        return set(self._infos)

    def header(self, name: str) -> tuple[tuple, np.dtype]:
        """``(shape, dtype)`` of member ``name``, its size checked against the zip's."""
        with self._open(name) as member:
            return self._read_header(name, member)[:2]

    def array(self, name: str, shape: tuple | None = None) -> np.ndarray:
        """Member ``name`` as a new array, refused unless its header has ``shape`` (when
        given) and its data is exactly what the header says.  A deflated member is inflated
        once, keeping nothing, before any memory is taken for it: its claim is proven first."""
        with self._open(name) as member:
            found, dtype, fortran = self._read_header(name, member)
            if shape is not None and found != tuple(shape):
                raise CheckpointError(f"{self.path} is damaged: {name} has shape {found}, "
                                      f"not {tuple(shape)}")
            size = math.prod(found) * dtype.itemsize
            if self._infos[name].compress_type == zipfile.ZIP_DEFLATED:
                self._read(name, member, size)
        array = np.empty(math.prod(found), dtype)
        if size:
            with self._open(name) as member:
                self._read_header(name, member)
                self._read(name, member, size, array.view(np.uint8))
        return array.reshape(found, order="F" if fortran else "C")

    def _read(self, name: str, member, size: int, target: np.ndarray | None = None) -> None:
        """Read the ``size`` bytes of data left in ``member``, CHUNK_BYTES at a time, into
        ``target`` (bytes) where given; a member that ends before is refused."""
        done = 0
        while done < size:
            try:
                chunk = member.read(min(CHUNK_BYTES, size - done))
            except READ_FAILURES as error:
                raise CheckpointError(f"{self.path} is damaged: {name} cannot be read "
                                      f"({type(error).__name__}: {error})") from None
            if not chunk:
                raise CheckpointError(f"{self.path} is damaged: {name} ends after {done:,} of "
                                      f"the {size:,} bytes of data its header declares")
            if target is not None:
                target[done:done + len(chunk)] = np.frombuffer(chunk, np.uint8)
            done += len(chunk)

    def _open(self, name: str):
        if name not in self._infos:
            raise CheckpointError(f"{self.path} is damaged: it has no member {name}.npy")
        try:
            return self._zip.open(self._infos[name])
        except READ_FAILURES as error:
            raise CheckpointError(f"{self.path} is damaged: {name} cannot be read "
                                  f"({type(error).__name__}: {error})") from None

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
    """Why the zip directory entry ``info`` cannot be read safely, judged by the entry alone,
    or None."""
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"uses compression method {info.compress_type}, not stored or deflate"
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        return (f"is stored, yet its {info.compress_size:,} bytes claim to hold "
                f"{info.file_size:,}")
    if (info.compress_type == zipfile.ZIP_DEFLATED
            and info.file_size > MAX_DEFLATE_RATIO * info.compress_size + (1 << 16)):
        return (f"inflates from {info.compress_size:,} to {info.file_size:,} bytes, more than "
                "any array of weights does")
    return None
