"""``cupy.cuda.runtime``: one device, CUDA runtime 13.0, and CuPy's error for a refused call
(``cupy_backends/cuda/api/runtime.pyx``: ``CUDARuntimeError``, "NAME: description")."""

from __future__ import annotations

errorIllegalState = 401  # noqa: N816 (CuPy's names)
errorStreamCaptureUnsupported = 900  # noqa: N816
errorStreamCaptureInvalidated = 901  # noqa: N816

_ERRORS = {
    errorIllegalState: ("cudaErrorIllegalState",
                        "the operation cannot be performed in the present state"),
    errorStreamCaptureUnsupported: ("cudaErrorStreamCaptureUnsupported",
                                    "operation not permitted when stream is capturing"),
    errorStreamCaptureInvalidated: ("cudaErrorStreamCaptureInvalidated",
                                    "operation failed due to a previous error during capture"),
}


class CUDARuntimeError(RuntimeError):
    """A CUDA runtime call that returned ``status``."""

    def __init__(self, status: int):
        self.status = status
        super().__init__("%s: %s" % _ERRORS[status])


def getDeviceCount() -> int:  # noqa: N802
    return 1


def runtimeGetVersion() -> int:  # noqa: N802
    """The CUDA runtime CuPy was built with: 1000 * major + 10 * minor."""
    return 13000
