"""``cupy.cuda``: streams, graphs, the memory pool and the runtime of the stand-in."""

import importlib

from cupy.cuda import graph, memory, runtime, stream
from cupy.cuda.graph import Graph
from cupy.cuda.memory import Memory, MemoryPointer, MemoryPool, get_allocator, using_allocator
from cupy.cuda.stream import Stream, get_current_stream

__all__ = ["Graph", "Memory", "MemoryPointer", "MemoryPool", "Stream", "get_allocator",
           "get_current_stream", "graph", "memory", "runtime", "stream", "using_allocator"]


def __getattr__(name):
    if name == "cublas":  # imported on first use, as CuPy imports (and loads) its cuBLAS
        return importlib.import_module("cupy.cuda.cublas")
    raise AttributeError(f"module 'cupy.cuda' has no attribute {name!r}")
