"""The stub cuBLAS (stub_cublas.c) built where the ``nvidia-cublas`` wheel puts cuBLAS, for the
stand-in of CuPy (tests/standin/cupy) to find as dnn finds the real one.  From the repository's
root, ``python -m tests.standin.stub_cublas SITE [MAJOR]`` builds it into the folder ``SITE``
(to put on ``PYTHONPATH``) and prints its path."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

from dnn.backends.cublas import file_name, wheel_folder
from tests.cuda_harness import compiler

SOURCE = Path(__file__).with_name("stub_cublas.c")


def build(site: Path, major: int = 13) -> Path:
    """The stub compiled as cuBLAS ``major`` into ``site`` where that major's wheel puts it
    (``nvidia/cu13/lib/libcublas.so.13``; ``nvidia/cublas/lib/libcublas.so.12`` for 12);
    returns its path."""
    path = Path(site) / wheel_folder(major) / file_name(major)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([compiler(), "-std=c99", "-O2", "-fPIC", "-shared",
                             f"-DSTUB_MAJOR={major}", f"-Wl,-soname,{path.name}", "-o",
                             str(path), str(SOURCE)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the host compiler refused {SOURCE.name}:\n{result.stderr}")
    return path


def workspaces(library: ctypes.CDLL) -> list[int]:
    """The workspace in force at each gemm the loaded stub ``library`` ran, in order (0 where
    it was cuBLAS's default pool)."""
    library.stub_gemm_count.restype = ctypes.c_size_t
    library.stub_gemm_workspace.restype = ctypes.c_void_p
    return [library.stub_gemm_workspace(ctypes.c_size_t(index)) or 0
            for index in range(library.stub_gemm_count())]


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), *map(int, sys.argv[2:3])))
