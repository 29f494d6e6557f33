"""``cupy.cuda.memory``: the books of CuPy 14's memory pool (``cupy/cuda/memory.pyx``).

The stand-in's arrays keep their bytes in NumPy memory; what this module models is which
device allocations a GPU run would make, as CuPy's ``SingleDeviceMemoryPool`` makes them:

- sizes rounded up to 512 bytes;
- free chunks kept per stream (an arena per stream): ``malloc`` searches only the current
  stream's arena, and a chunk, once freed (when the last array on it is gone), goes back to
  the arena of the stream it was allocated on;
- best fit (the smallest free chunk large enough), the rest split off as a free chunk, and a
  freed chunk merged with free neighbours of the same allocation;
- a new device allocation (``cudaMalloc``) when the arena has no chunk large enough: each is
  listed in ``mallocs``, with whether the current stream was being captured;
- ``free_all_blocks`` frees only the free chunks that are a whole allocation (never split, or
  merged back), as ``_Arena.free_all`` does.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from dataclasses import dataclass

from cupy.cuda import stream as stream_module

ALLOCATION_UNIT_SIZE = 512


@dataclass(frozen=True)
class Malloc:
    """A device allocation of ``size`` bytes, made while ``stream_ptr`` was the current stream
    (``capturing``: while it was being captured)."""

    size: int
    stream_ptr: int
    capturing: bool


mallocs: list[Malloc] = []  # every device allocation, in order (the stand-in's own record)
_addresses = itertools.count(1 << 40, 1 << 30)  # a device address per allocation


def _round_size(size: int) -> int:
    return -(-size // ALLOCATION_UNIT_SIZE) * ALLOCATION_UNIT_SIZE


class Memory:
    """One device allocation of ``size`` bytes at ``ptr``."""

    def __init__(self, size: int):
        self.size, self.ptr = size, next(_addresses) if size else 0
        if size:
            stream = stream_module.get_current_stream()
            mallocs.append(Malloc(size, stream.ptr, stream._capture is not None))


class _Chunk:
    """``size`` bytes at ``offset`` in ``mem``; ``prev`` and ``next`` are its neighbours in
    ``mem`` (split from the same allocation)."""

    def __init__(self, mem: Memory, offset: int, size: int, arena: _Arena):
        self.mem, self.offset, self.size, self.arena = mem, offset, size, arena
        self.prev = self.next = None

    def split(self, size: int) -> _Chunk | None:
        """Keep the first ``size`` bytes; the rest, if any, as a new chunk after this one."""
        if self.size == size:
            return None
        rest = _Chunk(self.mem, self.offset + size, self.size - size, self.arena)
        rest.prev, rest.next = self, self.next
        if self.next is not None:
            self.next.prev = rest
        self.next, self.size = rest, size
        return rest

    def merge_next(self) -> None:
        following = self.next
        self.size += following.size
        self.next = following.next
        if self.next is not None:
            self.next.prev = self


class _Arena:
    """The free chunks of one stream."""

    def __init__(self):
        self.free: list[_Chunk] = []

    def get_chunk(self, size: int) -> _Chunk | None:
        fitting = [chunk for chunk in self.free if chunk.size >= size]
        if not fitting:
            return None
        chunk = min(fitting, key=lambda chunk: (chunk.size, chunk.mem.ptr + chunk.offset))
        self._take(chunk)
        rest = chunk.split(size)
        if rest is not None:
            self.free.append(rest)
        return chunk

    def insert(self, chunk: _Chunk) -> None:
        while chunk.next is not None and self._take(chunk.next):
            chunk.merge_next()
        while chunk.prev is not None and self._take(chunk.prev):
            chunk = chunk.prev
            chunk.merge_next()
        self.free.append(chunk)

    def _take(self, chunk: _Chunk) -> bool:
        """Remove ``chunk`` from the free ones; False when it is in use."""
        for index, free in enumerate(self.free):
            if free is chunk:
                del self.free[index]
                return True
        return False


class PooledMemory:
    """A chunk in use; it goes back to its arena when the last array on it is gone."""

    def __init__(self, chunk: _Chunk, pool: MemoryPool):
        self.chunk, self.pool = chunk, pool
        self.ptr = chunk.mem.ptr + chunk.offset

    def __del__(self):
        self.pool._free(self.chunk)


class MemoryPointer:
    """``ptr``, ``offset`` bytes into ``mem``."""

    def __init__(self, mem, offset: int):
        self.mem, self.ptr = mem, mem.ptr + offset


class MemoryPool:
    """CuPy's memory pool for the one device."""

    def __init__(self):
        self._arenas: dict[int, _Arena] = {}

    def malloc(self, size: int) -> MemoryPointer:
        size = _round_size(size)
        if size == 0:
            return MemoryPointer(Memory(0), 0)
        stream_ptr = stream_module.get_current_stream().ptr
        arena = self._arenas.setdefault(stream_ptr, _Arena())
        chunk = arena.get_chunk(size) or _Chunk(Memory(size), 0, size, arena)
        return MemoryPointer(PooledMemory(chunk, self), 0)

    def _free(self, chunk: _Chunk) -> None:
        chunk.arena.insert(chunk)

    def n_free_blocks(self) -> int:
        return sum(len(arena.free) for arena in self._arenas.values())

    def free_all_blocks(self, stream=None) -> None:
        """Hand the free blocks back to the device (all streams', or ``stream``'s): only those
        never split, or merged back whole, as CuPy's ``_Arena.free_all`` (``if chunk.next is
        not None or chunk.prev is not None: # Cannot free this chunk``); a free part of an
        allocation of which another part is in use stays in the pool."""
        for pointer, arena in self._arenas.items():
            if stream is None or stream.ptr == pointer:
                arena.free = [chunk for chunk in arena.free
                              if chunk.prev is not None or chunk.next is not None]


_default_pool = MemoryPool()
_thread_local = threading.local()


def _malloc(size: int) -> MemoryPointer:
    """A device allocation of its own, without a pool (CuPy's ``memory._malloc``)."""
    return MemoryPointer(Memory(size), 0)


@contextlib.contextmanager
def using_allocator(allocator=None):
    """The allocator of this thread inside the block (None: no pool)."""
    previous = getattr(_thread_local, "allocator", None)
    _thread_local.allocator = allocator or _malloc
    try:
        yield
    finally:
        _thread_local.allocator = previous


def alloc(size: int) -> MemoryPointer:
    """``size`` bytes from the current allocator: this thread's, else the default pool."""
    return (getattr(_thread_local, "allocator", None) or _default_pool.malloc)(size)
