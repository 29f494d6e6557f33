"""``cupy.cuda.runtime``: one device, CUDA runtime 13.0, and CuPy's error for a refused call
(``cupy_backends/cuda/api/runtime.pyx``: ``CUDARuntimeError``, "NAME: description")."""

from __future__ import annotations

errorMemoryAllocation = 2  # noqa: N816 (CuPy's names)
errorIllegalState = 401  # noqa: N816
errorIllegalAddress = 700  # noqa: N816
errorStreamCaptureUnsupported = 900  # noqa: N816
errorStreamCaptureInvalidated = 901  # noqa: N816

_ERRORS = {
    errorMemoryAllocation: ("cudaErrorMemoryAllocation", "out of memory"),
    errorIllegalState: ("cudaErrorIllegalState",
                        "the operation cannot be performed in the present state"),
    errorIllegalAddress: ("cudaErrorIllegalAddress", "an illegal memory access was encountered"),
    errorStreamCaptureUnsupported: ("cudaErrorStreamCaptureUnsupported",
                                    "operation not permitted when stream is capturing"),
    errorStreamCaptureInvalidated: ("cudaErrorStreamCaptureInvalidated",
                                    "operation failed due to a previous error during capture"),
}


class CUDARuntimeError(RuntimeError):
    """A CUDA runtime call that returned ``status``; ``cause``, where the stand-in knows what
    a GPU would not say, is added in parentheses."""

    def __init__(self, status: int, cause: str | None = None):
        self.status = status
        message = "%s: %s" % _ERRORS[status]
        super().__init__(message if cause is None else f"{message} ({cause})")


def getDeviceCount() -> int:  # noqa: N802
    return 1


def runtimeGetVersion() -> int:  # noqa: N802
    """The CUDA runtime CuPy was built with: 1000 * major + 10 * minor."""
    return 13000
