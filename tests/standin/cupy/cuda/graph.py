"""``cupy.cuda.graph.Graph``: a captured graph, which ``launch`` runs on a stream.

A graph's memory (``regions``: the device memory handed out while it was captured, the
temporaries its kernels write included) must stay its own while it lives.  Where the device's
books (cupy/cuda/memory.py) show an array of something else alive on part of it at a launch,
or its allocation handed back to the device, a GPU's launches would overwrite that array or
write freed memory: here that launch, and every one after, raises ``cudaErrorIllegalAddress``
instead, naming what happened (a GPU reports a fault later, at a synchronization, if at all).

``launches`` counts the launches of every graph (the stand-in's own record, for tests)."""

from __future__ import annotations

from cupy.cuda import memory
from cupy.cuda import stream as stream_module
from cupy.cuda.runtime import CUDARuntimeError, errorIllegalAddress

launches = 0


class Graph:
    """What a stream recorded while it was being captured (``Stream.end_capture``)."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("currently this class cannot be initiated by the user and "
                                  "must be created via stream capture")

    @classmethod
    def _from_capture(cls, capture) -> Graph:
        graph = cls.__new__(cls)
        graph._capture, graph._fault = capture, None
        memory.device.keep_for(graph)
        return graph

    @property
    def regions(self) -> list:
        """The device memory its kernels write (:class:`cupy.cuda.memory.Region`)."""
        return self._capture.regions

    def fault(self, cause: str) -> None:
        """Its memory was taken (``cause``, the first one kept): launching it faults."""
        if self._fault is None:
            self._fault = cause

    def launch(self, stream=None) -> None:
        """Run the graph on ``stream`` (the current one by default)."""
        global launches
        memory.device.check_launch(self)
        if self._fault is not None:
            raise CUDARuntimeError(errorIllegalAddress, self._fault)
        (stream or stream_module.get_current_stream())._launch(self._run)
        launches += 1

    def _run(self) -> None:
        for operation in self._capture.operations:
            operation()
