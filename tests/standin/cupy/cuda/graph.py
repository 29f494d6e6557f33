"""``cupy.cuda.graph.Graph``: a captured graph, which ``launch`` runs on a stream.

``launches`` counts the launches of every graph (the stand-in's own record, for tests)."""

from __future__ import annotations

from cupy.cuda import stream as stream_module

launches = 0


class Graph:
    """What a stream recorded while it was being captured (``Stream.end_capture``)."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("currently this class cannot be initiated by the user and "
                                  "must be created via stream capture")

    @classmethod
    def _from_capture(cls, capture) -> Graph:
        graph = cls.__new__(cls)
        graph._capture = capture
        return graph

    def launch(self, stream=None) -> None:
        """Run the graph on ``stream`` (the current one by default)."""
        global launches
        (stream or stream_module.get_current_stream())._launch(self._run)
        launches += 1

    def _run(self) -> None:
        for operation in self._capture.operations:
            operation()
