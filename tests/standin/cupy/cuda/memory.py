"""``cupy.cuda.memory``: the books of CuPy 14's memory pool (``cupy/cuda/memory.pyx``) and of
the device memory under it.

The stand-in's arrays keep their bytes in NumPy memory; what this module models is which
device allocations a GPU run would make, as CuPy's ``SingleDeviceMemoryPool`` makes them:

- sizes rounded up to 512 bytes;
- free chunks kept per stream (an arena per stream): ``malloc`` searches only the current
  stream's arena, and a chunk, once freed (when the last array on it is gone), goes back to
  the arena of the stream it was allocated on, if its pool is still there (:class:`PooledMemory`);
- best fit (the smallest free chunk large enough; of chunks of one size, the lowest device
  address, where CuPy takes the lowest address of its Python chunk object, which is no
  order a program can repeat), the rest split off as a free chunk, and a freed chunk merged
  with free neighbours of the same allocation;
- a new device allocation (``cudaMalloc``, by the pool's ``allocator``) when the arena has
  no chunk large enough: each is listed in ``mallocs``, with whether the current stream was
  being captured;
- ``free_all_blocks`` frees only the free chunks that are a whole allocation (never split, or
  merged back), as ``_Arena.free_all`` does, and hands them back to the device (``cudaFree``).

The device (``device``) holds ``device.capacity`` bytes (None, the default: as many as are
asked for); a ``cudaMalloc`` beyond them fails with ``cudaErrorMemoryAllocation``, and the pool
retries it as ``SingleDeviceMemoryPool._try_malloc`` does: after ``free_all_blocks()`` of
this pool (the one that ran out, never another), then after two ``gc.collect()`` and
``free_all_blocks()`` again; then it raises ``OutOfMemoryError``.  (CuPy's per-pool limit,
``set_limit``, is not modelled.)  A pool's allocation goes back to the device through
``free_all_blocks``, or when the last array on it is gone after the pool itself
(:class:`PooledMemory`); never while it is free in a dropped pool (CuPy 14.1 and later never
free a dropped pool's free blocks).  A pool-less one (``using_allocator(None)``) goes back when
the last array on it is gone, as ``Memory.__dealloc__`` frees it.

A captured graph's memory: every part of an allocation handed out to an array while the
current stream is being captured (a :class:`Region`: allocation, offset, size) is the graph's
(``Graph.regions``), since its kernels write there on every launch, though the capture's
temporary arrays are gone and their chunks free in the pool.  While the graph is alive (held
weakly here), an array of anything else alive on part of it when the graph is launched (handed
out by a pool's ``malloc``, another capture's included) would be overwritten by the launch on a
GPU, and an allocation of it handed back to the device would make launches write freed memory.
(An array made on that memory and gone before the next launch, as an eager step's temporary,
harms nothing.)  The stand-in, whose bytes are NumPy's, would show neither; the device's books
mark the graph instead, and that launch raises ``cudaErrorIllegalAddress``
(cupy/cuda/graph.py).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import threading
import weakref
from dataclasses import dataclass

from cupy.cuda import stream as stream_module
from cupy.cuda.runtime import CUDARuntimeError, errorMemoryAllocation

ALLOCATION_UNIT_SIZE = 512


@dataclass(frozen=True)
class Malloc:
    """A device allocation of ``size`` bytes, made while ``stream_ptr`` was the current stream
    (``capturing``: while it was being captured)."""

    size: int
    stream_ptr: int
    capturing: bool


@dataclass(frozen=True)
class Region:
    """``size`` bytes at ``offset`` in the device allocation at address ``allocation``."""

    allocation: int
    offset: int
    size: int

    def overlaps(self, other: Region) -> bool:
        return (self.allocation == other.allocation and self.offset < other.offset + other.size
                and other.offset < self.offset + self.size)

    def __str__(self) -> str:
        return f"{self.size} bytes at {self.allocation + self.offset:#x}"


class OutOfMemoryError(MemoryError):
    """CuPy's error for a pool that could not get ``size`` more bytes from the device, having
    ``total`` bytes allocated so far."""

    def __init__(self, size: int, total: int):
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: "
                         f"{total:,} bytes).")


class _Device:
    """The device's memory: ``allocated`` bytes, at most ``capacity`` (None: no limit), and the
    live graphs whose memory must stay theirs (module docstring)."""

    def __init__(self):
        self.capacity: int | None = None
        self.allocated = 0
        self._graphs = weakref.WeakSet()
        self._in_use = weakref.WeakSet()  # what an array's memory is held by (``hand_out``)

    def malloc(self, size: int) -> int:
        """``cudaMalloc``: the address of ``size`` new bytes."""
        if self.capacity is not None and self.allocated + size > self.capacity:
            raise CUDARuntimeError(errorMemoryAllocation)
        self.allocated += size
        return next(_addresses)

    def free(self, ptr: int, size: int) -> None:
        """``cudaFree`` of the allocation of ``size`` bytes at ``ptr``."""
        self.allocated -= size
        self._take_from_graphs(Region(ptr, 0, size), "went back to the device")

    def hand_out(self, region: Region, holder) -> None:
        """``region`` given to a new array through ``holder`` (a :class:`PooledMemory` or
        :class:`Memory`, alive as long as an array is on it): the memory of the graph being
        captured, if any."""
        capture = stream_module.get_current_stream()._capture
        holder.region, holder.capture = region, capture
        if capture is not None:
            capture.regions.append(region)
        self._in_use.add(holder)

    def check_launch(self, graph) -> None:
        """Fault ``graph`` where an array made outside its capture is alive on part of its
        memory: the launch would overwrite it."""
        for holder in list(self._in_use):
            if holder.capture is graph._capture:
                continue
            for own in graph.regions:
                if own.overlaps(holder.region):
                    graph.fault(f"stand-in: the {own} it writes hold a live array of "
                                f"something else")
                    return

    def in_use(self) -> list:
        """What the memory of each live array is held by (a :class:`PooledMemory`, whose
        ``pool`` is a weak reference to its pool, or a pool-less :class:`Memory`)."""
        return list(self._in_use)

    def keep_for(self, graph) -> None:
        """Hold ``graph``'s memory (``graph.regions``) for it while it lives."""
        self._graphs.add(graph)

    def _take_from_graphs(self, region: Region, what: str) -> None:
        """Fault each live graph that writes part of ``region``."""
        for graph in list(self._graphs):
            for own in graph.regions:
                if own.overlaps(region):
                    graph.fault(f"stand-in: the {own} it writes {what}")
                    break


mallocs: list[Malloc] = []  # every device allocation, in order (the stand-in's own record)
_addresses = itertools.count(1 << 40, 1 << 30)  # a device address per allocation
device = _Device()


def _round_size(size: int) -> int:
    return -(-size // ALLOCATION_UNIT_SIZE) * ALLOCATION_UNIT_SIZE


class Memory:
    """One device allocation of ``size`` bytes at ``ptr`` (``cudaMalloc``: raises
    ``CUDARuntimeError`` ``cudaErrorMemoryAllocation`` where the device has no room)."""

    def __init__(self, size: int):
        self.size, self.ptr = size, device.malloc(size) if size else 0
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

    def free_all(self) -> list[_Chunk]:
        """Take out, and return, the free chunks that are a whole allocation; a free part of
        an allocation of which another part is in use stays (``_Arena.free_all``: ``if
        chunk.next is not None or chunk.prev is not None: # Cannot free this chunk``)."""
        whole = [chunk for chunk in self.free if chunk.prev is None and chunk.next is None]
        self.free = [chunk for chunk in self.free
                     if chunk.prev is not None or chunk.next is not None]
        return whole

    def _take(self, chunk: _Chunk) -> bool:
        """Remove ``chunk`` from the free ones; False when it is in use."""
        for index, free in enumerate(self.free):
            if free is chunk:
                del self.free[index]
                return True
        return False


class PooledMemory:
    """A chunk in use; it goes back to its arena when the last array on it is gone.  It holds
    its pool weakly, as CuPy's does, through the pool's own weak reference (``pmem._init(chunk,
    self._weakref)``): one of its own, collected with it in a garbage cycle, would be cleared
    though the pool lives.  Where the pool is gone by then (``# The pool does not exist
    anymore``), a chunk that is a whole allocation goes back to the device with it, and a part
    of a split one is lost with the rest of that allocation (CuPy's chunks hold each other, in
    cycles its garbage collector never frees: ``@cython.no_gc``)."""

    def __init__(self, chunk: _Chunk, pool_reference: weakref.ref):
        self.chunk, self.pool = chunk, pool_reference
        self.ptr = chunk.mem.ptr + chunk.offset

    def __del__(self):
        pool, chunk = self.pool(), self.chunk
        if pool is not None:
            pool._free(chunk)
        elif chunk.prev is None and chunk.next is None:
            device.free(chunk.mem.ptr, chunk.size)


class MemoryPointer:
    """``ptr``, ``offset`` bytes into ``mem``."""

    def __init__(self, mem, offset: int):
        self.mem, self.ptr = mem, mem.ptr + offset


def _device_allocation(size: int) -> MemoryPointer:
    """A pool's allocation of ``size`` new bytes, as CuPy's ``_malloc`` makes it: ``Memory``,
    whose bytes the pool hands back (``free_all_blocks``)."""
    return MemoryPointer(Memory(size), 0)


class MemoryPool:
    """CuPy's memory pool for the one device; ``allocator`` makes its device allocations
    (``_malloc``'s by default), called with a size, giving a ``MemoryPointer``."""

    def __init__(self, allocator=None):
        self._allocator = allocator or _device_allocation
        self._arenas: dict[int, _Arena] = {}
        self._total_bytes = 0  # of the allocations it holds
        self._weakref = weakref.ref(self)  # what its blocks in use hold it by

    def malloc(self, size: int) -> MemoryPointer:
        size = _round_size(size)
        if size == 0:
            return MemoryPointer(Memory(0), 0)
        stream_ptr = stream_module.get_current_stream().ptr
        arena = self._arenas.setdefault(stream_ptr, _Arena())
        chunk = arena.get_chunk(size) or _Chunk(self._try_malloc(size), 0, size, arena)
        held = PooledMemory(chunk, self._weakref)
        device.hand_out(Region(chunk.mem.ptr, chunk.offset, chunk.size), held)
        return MemoryPointer(held, 0)

    def _try_malloc(self, size: int) -> Memory:
        """A new allocation, its ``cudaMalloc`` retried where the device ran out, as
        ``SingleDeviceMemoryPool._try_malloc`` retries it: after ``self.free_all_blocks(None)``,
        then after ``gc.collect()`` twice and ``self.free_all_blocks(None)``; then
        ``OutOfMemoryError``."""
        for make_room in (lambda: None, self.free_all_blocks, self._collect_and_free_all):
            make_room()
            try:
                memory = self._allocator(size).mem
            except CUDARuntimeError as error:
                if error.status != errorMemoryAllocation:
                    raise
                continue
            self._total_bytes += size
            return memory
        raise OutOfMemoryError(size, self._total_bytes)

    def _collect_and_free_all(self) -> None:
        gc.collect()
        gc.collect()
        self.free_all_blocks()

    def _free(self, chunk: _Chunk) -> None:
        chunk.arena.insert(chunk)

    def total_bytes(self) -> int:
        """The bytes of the device allocations this pool holds."""
        return self._total_bytes

    def used_bytes(self) -> int:
        """The bytes of its chunks that arrays are on."""
        return sum(holder.chunk.size for holder in device.in_use()
                   if getattr(holder, "pool", lambda: None)() is self)

    def n_free_blocks(self) -> int:
        return sum(len(arena.free) for arena in self._arenas.values())

    def free_all_blocks(self, stream=None) -> None:
        """Hand the free blocks back to the device (all streams', or ``stream``'s): only those
        never split, or merged back whole (:meth:`_Arena.free_all`); a free part of an
        allocation of which another part is in use stays in the pool."""
        for pointer, arena in self._arenas.items():
            if stream is None or stream.ptr == pointer:
                for chunk in arena.free_all():
                    self._total_bytes -= chunk.size
                    device.free(chunk.mem.ptr, chunk.size)


_default_pool = MemoryPool()
_thread_local = threading.local()


def _malloc(size: int) -> MemoryPointer:
    """A device allocation of its own, without a pool (CuPy's ``memory._malloc``), handed back
    to the device when the last array on it is gone (``Memory.__dealloc__``)."""
    memory = Memory(size)
    if size:
        device.hand_out(Region(memory.ptr, 0, size), memory)
        weakref.finalize(memory, device.free, memory.ptr, size)
    return MemoryPointer(memory, 0)


@contextlib.contextmanager
def using_allocator(allocator=None):
    """The allocator of this thread inside the block (None: no pool)."""
    previous = getattr(_thread_local, "allocator", None)
    _thread_local.allocator = allocator or _malloc
    try:
        yield
    finally:
        _thread_local.allocator = previous


def get_allocator():
    """The current allocator: this thread's (``using_allocator``), else the default pool's
    ``malloc`` (which ``import cupy`` makes the global one)."""
    return getattr(_thread_local, "allocator", None) or _default_pool.malloc


def alloc(size: int) -> MemoryPointer:
    """``size`` bytes from the current allocator (:func:`get_allocator`)."""
    return get_allocator()(size)
