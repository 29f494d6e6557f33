"""Data-parallel training (dnn.distributed): ``mpiexec -n 2`` runs equal to one process.

The tests that need MPI start this file as a script under the venv's ``mpiexec -n 2`` (a
worker below, named on the command line), with a timeout, and compare what the ranks wrote
with runs made here; they are skipped, with the reason, where mpi4py or mpiexec is missing.
NCCL cannot run without two GPUs: its communicator runs here on the CuPy stand-in
(tests/standin) over a ``cupy.cuda.nccl`` of MPI (:class:`FakeNccl`), captured in the step's
graph as NCCL is; on GPUs it is skipped with the reason.  GPUs without NCCL (the MPI
communicator summing through the host) run on the stand-in too.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # a worker, started by mpiexec from the repository's root
    sys.path.insert(0, str(ROOT))

import dnn  # noqa: E402
from dnn import distributed  # noqa: E402
from dnn.distributed import failure, launcher, threads  # noqa: E402
from dnn.distributed.communicator import SingleProcess  # noqa: E402
from dnn.errors import UsageError  # noqa: E402
from dnn.layers import Dense  # noqa: E402
from dnn.trainers import data_parallel  # noqa: E402
from dnn.trainers.epoch_iterator import (ArrayBatches, RanOutOfData,  # noqa: E402
                                         StreamBatches)
from dnn.trainers.data import DeviceData  # noqa: E402
from dnn.utils import to_categorical  # noqa: E402

BATCH = 128
# name: (optimizer, samples, epochs): 50 steps with an uneven last batch (77 rows: 39 + 38),
# and a last batch of one row, which leaves rank 1 none.
CASES = {"sgd": ("sgd", 49 * BATCH + 77, 1), "rmsprop": ("rmsprop", 49 * BATCH + 77, 1),
         "adam": ("adam", 49 * BATCH + 77, 1), "zero-row": ("adam", 2 * BATCH + 1, 3)}


def _mpi_missing() -> str | None:
    """Why MPI runs cannot be tested here, or None."""
    if importlib.util.find_spec("mpi4py") is None:
        return f"mpi4py is not installed ({launcher.MPI_EXTRA})"
    try:
        launcher.mpiexec()
    except UsageError as error:
        return str(error)
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=f"{_mpi_missing()}")


def mpiexec(*arguments, ranks: int = 2, timeout: float = 60, environment: dict | None = None,
            runner: tuple = (), unset: tuple = ()) -> subprocess.CompletedProcess:
    """``arguments`` (a worker of this file and its arguments, or ``-m dnn ...``) run on
    ``ranks`` processes, one BLAS thread each, from the repository's root; a worker by
    ``python RUNNER`` (``("-m", "mpi4py")``: mpi4py's runner) where given, and without the
    environment variables ``unset``."""
    command = list(arguments) if arguments[0] == "-m" else [*runner, __file__, *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           **(environment or {})}
    for name in (*unset, failure.RANK_PROCESS):  # the mark of a rank this test runs under
        env.pop(name, None)
    return subprocess.run([launcher.mpiexec(), "-n", str(ranks), sys.executable,
                           *map(str, command)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def assert_ran(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def report(folder: str, name: str, **values) -> None:
    """Write a worker's ``values`` as JSON, a file per rank (mpiexec mixes the ranks' output
    mid-line)."""
    rank = distributed.communicator().rank
    Path(folder, f"{name}-{rank}.json").write_text(json.dumps(values))


def reports(folder: Path, name: str) -> list[dict]:
    """What :func:`report` wrote for ``name``, rank 0's then rank 1's."""
    return [json.loads((folder / f"{name}-{rank}.json").read_text()) for rank in (0, 1)]


# -- the data and models of the equivalence runs ------------------------------------------------
def data(samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x (samples, 784), one-hot y (samples, 10))``: ten classes of images in [0, 1], each
    around a centre of its own, about a third of the pixels 0."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, size=samples)
    centres = rng.random((10, 784), dtype=np.float32)
    x = 0.7 * centres[labels] + 0.3 * rng.random((samples, 784), dtype=np.float32)
    x[x < 0.4] = 0
    return x, to_categorical(labels, 10)


def seed_network(optimizer: str, backend=None, dtype: str = "float32") -> dnn.Sequential:
    """The seed network (784 -> 512 relu -> 10 softmax), built, compiled."""
    model = dnn.Sequential([Dense(512, activation="relu"), Dense(10, activation="softmax")],
                           seed=0, backend=backend, dtype=dtype)
    model.build(784)
    model.compile(optimizer={"sgd": dnn.optimizers.SGD(0.05)}.get(optimizer, optimizer),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def trained(case: str) -> dnn.Sequential:
    """``fit`` of the seed network on ``case``'s data, in this process (one rank of many, or
    a plain run)."""
    optimizer, samples, epochs = CASES[case]
    model = seed_network(optimizer)
    model.fit(*data(samples), batch_size=BATCH, epochs=epochs, verbose=0)
    return model


def summing_the_shards(case: str, ranks: int = 2, shuffle: bool = True) -> list[np.ndarray]:
    """The weights after one process trains ``case`` as ``ranks`` ranks do: the same batches
    (of a new permutation each epoch, or without ``shuffle`` in order), each rank's share's
    gradient weighted by its rows and summed in rank order."""
    optimizer, samples, epochs = CASES[case]
    model = seed_network(optimizer)
    x, y = data(samples)
    grads = [grad for layer in model.layers for grad in layer.grads]
    for _ in range(epochs):
        order = model.rng.permutation(samples) if shuffle else np.arange(samples)
        for start in range(0, samples, BATCH):
            batch = order[start:start + BATCH]
            total = None
            for rank in range(ranks):
                first, last = distributed.share(len(batch), rank, ranks)
                rows = batch[first:last]
                model.compute_gradients(x[rows], y[rows])
                weighted = np.concatenate([g.reshape(-1) * ((last - first) / len(batch))
                                           for g in grads])
                total = weighted if total is None else total + weighted
            start_of = 0
            for grad in grads:
                grad[...] = total[start_of:start_of + grad.size].reshape(grad.shape)
                start_of += grad.size
            model.apply_gradients()
    return model.get_weights()


def python(*arguments, unset=(), **variables) -> subprocess.CompletedProcess:
    """``python ARGUMENTS`` in a process of its own, from the repository, within 60 s; its
    environment this one's without the variables ``unset`` (nor a rank's mark), with
    ``variables``."""
    kept = {key: value for key, value in os.environ.items()
            if key not in (*unset, failure.RANK_PROCESS)}
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**kept, **variables})


# -- in process: the pieces ---------------------------------------------------------------------
def test_a_plain_run_is_one_process_and_never_imports_mpi():
    result = python("-c", (
        "import sys, numpy as np, dnn\n"
        "from dnn import distributed\n"
        "m = dnn.Sequential([dnn.layers.Dense(2, activation='softmax')], seed=0)\n"
        "m.compile('sgd'); m.fit(np.ones((4, 3)), np.eye(2)[[0, 1, 0, 1]], verbose=0)\n"
        "print(type(distributed.communicator()).__name__, 'mpi4py' in sys.modules)"),
        unset=launcher.SIZE_VARIABLES)
    assert result.stdout.split() == ["SingleProcess", "False"], result.stderr


def test_under_a_launcher_dnn_distributed_ends_the_job_on_an_exception_without_mpi_yet():
    """Importing dnn.distributed installs the hook that ends the job on an exception before
    the ranks are joined (it starts MPI only then), under a launcher alone."""
    code = ("import sys\nfrom dnn import distributed\n"
            "print(type(sys.excepthook).__name__, 'mpi4py' in sys.modules)")
    plain = python("-c", code, unset=launcher.SIZE_VARIABLES)
    assert plain.stdout.split() == ["builtin_function_or_method", "False"], plain.stderr
    launched = python("-c", code, unset=launcher.SIZE_VARIABLES, PMI_SIZE="2", PMI_RANK="1")
    assert launched.stdout.split() == ["AbortBeforeJoining", "False"], launched.stderr


ABORT_SHOWN = ("from dnn import distributed\nfrom dnn.distributed import failure\n"
               "failure.abort_after_joining = lambda status: print('aborting', status)\n")
LAUNCHED_RANK_1 = {"PMI_SIZE": "2", "PMI_RANK": "1"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork: POSIX")
def test_under_a_launcher_a_process_a_rank_starts_or_forks_ends_as_a_plain_one():
    """A Python subprocess of a rank that imports dnn inherits the launcher's variables, but
    is no rank: its exception ends it alone, reported by Python's own hook; so does one in a
    fork of the rank's process; the rank's own still aborts."""
    code = ABORT_SHOWN + (
        "import os, subprocess, sys\n"
        "child = subprocess.run([sys.executable, '-c', 'import sys\\nfrom dnn import "
        "distributed\\nprint(type(sys.excepthook).__name__)\\nraise RuntimeError(2)'],\n"
        "                       capture_output=True, text=True)\n"
        "print(child.returncode, child.stdout.strip(), 'rank 1: ' in child.stderr,\n"
        "      'RuntimeError: 2' in child.stderr)\n"
        "sys.stdout.flush()\n"
        "if os.fork() == 0:\n"
        "    raise RuntimeError('in the fork')\n"
        "print('fork', os.wait()[1] >> 8)\n"
        "sys.stdout.flush()\n"
        "raise RuntimeError('in the rank')\n")
    result = python("-c", code, unset=launcher.SIZE_VARIABLES, **LAUNCHED_RANK_1)
    assert result.stdout.split() == ["1", "builtin_function_or_method", "False", "True",
                                     "fork", "1", "aborting", "1"], result.stderr
    assert "RuntimeError: in the fork" in result.stderr
    assert result.stderr.count("rank 1: Traceback") == 1  # the rank's own


@pytest.mark.parametrize("script, typed, aborts", [
    (ABORT_SHOWN, "raise RuntimeError('typed')\nprint('went on')\n", False),
    (ABORT_SHOWN + "raise RuntimeError('in the script')\n", "print('went on')\n", True)],
    ids=["at-the-prompt", "in-the-script"])
def test_under_a_launcher_python_i_goes_on_after_an_error_typed_at_its_prompt(script, typed,
                                                                              aborts):
    """``python -i`` under a launcher: an error typed at the prompt is reported and the
    session goes on; one in the script before it still ends the job (a batch job run with
    ``-i`` has no one at its prompt)."""
    env = {key: value for key, value in os.environ.items()
           if key not in (*launcher.SIZE_VARIABLES, failure.RANK_PROCESS)}
    result = subprocess.run([sys.executable, "-i", "-c", script], input=typed,
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**env, **LAUNCHED_RANK_1})
    assert ("aborting 1" in result.stdout) == aborts, result.stdout + result.stderr
    assert "went on" in result.stdout  # (the abort shown here returns, where MPI's ends all)


@pytest.mark.parametrize("elsewhere", ["a fork", "the prompt"])
def test_a_joined_ranks_hook_leaves_a_forks_error_and_one_typed_at_the_prompt_to_python(
        monkeypatch, elsewhere):
    """The hook of a rank whose communicator is made ends the job (MPI_Abort) from the
    rank's own process alone: not from a fork of it, nor at Python's prompt."""
    from dnn.distributed.mpi import MpiCommunicator

    hook = MpiCommunicator.__new__(MpiCommunicator)  # its hook alone: no MPI here
    seen = []
    hook._previous_hook = lambda kind, error, trace: seen.append(error)
    hook._process = os.getpid() + (1 if elsewhere == "a fork" else 0)
    if elsewhere == "the prompt":
        monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)
    monkeypatch.setattr(MpiCommunicator, "end_job", lambda *arguments: seen.append("ended"))
    error = RuntimeError("typed")
    hook._abort_on_exception(RuntimeError, error, None)
    assert seen == [error]
    monkeypatch.delattr(sys, "ps1", raising=False)
    hook._process = os.getpid()
    hook._abort_on_exception(RuntimeError, error, None)
    assert seen == [error, "ended"]


def test_a_mark_of_a_process_that_is_no_ancestor_is_taken_for_none():
    """``DNN_RANK_PROCESS`` left in the environment by another job (a process that is gone,
    or any but an ancestor): this rank installs its hook, and marks it anew."""
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    code = ("import os, sys\nfrom dnn import distributed\nfrom dnn.distributed import failure\n"
            "print(type(sys.excepthook).__name__, os.environ[failure.RANK_PROCESS] == "
            "str(os.getpid()))")
    result = python("-c", code, unset=launcher.SIZE_VARIABLES, DNN_RANK_PROCESS=str(gone.pid),
                    **LAUNCHED_RANK_1)
    assert result.stdout.split() == ["AbortBeforeJoining", "True"], result.stderr


@pytest.mark.parametrize("variable", launcher.SIZE_VARIABLES)
def test_the_launchers_environment_says_how_many_processes(monkeypatch, variable):
    for name in launcher.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert launcher.launched_size() == 1
    monkeypatch.setenv(variable, "4")
    assert launcher.launched_size() == 4


def test_shares_are_contiguous_cover_the_batch_and_leave_a_rank_past_the_rows_none():
    for rows in (0, 1, 5, 77, 128):
        for size in (1, 2, 3, 8):
            shares = [distributed.share(rows, rank, size) for rank in range(size)]
            assert shares[0][0] == 0 and shares[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
            assert max(s[1] - s[0] for s in shares) - min(s[1] - s[0] for s in shares) <= 1
    assert distributed.share(77, 0, 2) == (0, 39) and distributed.share(1, 1, 2) == (1, 1)


def test_a_rank_gets_its_share_of_every_batch_of_the_same_permutation():
    backend = dnn.get_backend("cpu")
    data_ = DeviceData(np.arange(10.0).reshape(10, 1), np.zeros((10, 1)))
    passes = {}
    for rank in (0, 1):
        batches = ArrayBatches(data_, 4, backend, np.random.default_rng(3), shuffle=True,
                               shard=(rank, 2))
        passes[rank] = [(list(batch.indices), batch.total) for batch in batches.epoch()]
    whole = ArrayBatches(data_, 4, backend, np.random.default_rng(3), shuffle=True)
    for (mine, total), (theirs, _), batch in zip(passes[0], passes[1], whole.epoch()):
        assert mine + theirs == list(batch.indices) and total == batch.rows
    assert [total for _, total in passes[0]] == [4, 4, 2]


def test_a_rank_gets_its_share_of_every_batch_a_source_gives():
    model = seed_network("sgd")
    source = [(np.ones((5, 784)) * row, np.eye(10)[[0] * 5]) for row in range(3)]
    for rank, rows in ((0, 3), (1, 2)):
        batches = StreamBatches(model, source, shard=(rank, 2))
        for number, batch in enumerate(batches.epoch()):
            assert (batch.rows, batch.total, batch.data.count) == (rows, 5, rows)
            assert (batch.data.x == number).all()


class Ranks(SingleProcess):
    """One rank's view of a job whose other ranks gathered ``others``."""

    def __init__(self, *others):
        self.others = others

    def gather_objects(self, value) -> list:
        return [value, *self.others]


def test_settings_that_differ_between_ranks_are_refused_naming_the_first():
    Ranks({"batch_size": 128}).require_same({"batch_size": 128})
    with pytest.raises(UsageError, match="every rank must run with the same settings: rank 2 "
                                         "has batch_size 64, rank 0 128"):
        Ranks({"batch_size": 128}, {"batch_size": 64}).require_same({"batch_size": 128})


class OwnFile(dnn.callbacks.Callback):
    """A user's callback that writes ``{folder}/{name}-{rank}.txt`` at the end of ``fit``."""

    def __init__(self, folder, name: str):
        super().__init__()
        self.path = Path(folder, f"{name}-{distributed.communicator().rank}.txt")

    def on_train_end(self, logs=None):
        self.path.write_text("written")


class OwnWriter(OwnFile):
    """The same, declared a writer: on rank 0 alone."""

    writes_files = True


def test_the_writers_run_on_rank_0_alone(tmp_path):
    callbacks = dnn.callbacks
    writers = [callbacks.CSVLogger("log.csv"), callbacks.ModelCheckpoint("model.npz"),
               callbacks.BackupAndRestore(tmp_path), callbacks.ProgbarLogger(),
               callbacks.EpochLines(), OwnWriter(tmp_path, "own")]
    others = [callbacks.EarlyStopping(), callbacks.LambdaCallback(), callbacks.History(),
              OwnFile(tmp_path, "plain")]
    assert not callbacks.Callback.writes_files
    assert data_parallel.on_this_rank([*writers, *others], 0) == [*writers, *others]
    assert data_parallel.on_this_rank([*writers, *others], 1) == others
    assert data_parallel.on_this_rank(writers[0], 1) is None
    assert data_parallel.on_this_rank(others[0], 1) is others[0]


def test_blas_threads_are_the_cores_shared_among_the_local_ranks(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    assert [threads.default_threads(n) for n in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.limit_blas_threads(2) is None  # the user's choice stands


def test_the_cores_are_those_the_process_may_run_on(monkeypatch):
    """A process narrowed to 3 of a machine's 64 cores (taskset, a container's cpuset)
    shares its 3; where the system has no affinity to tell, the machine's cores."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7}, raising=False)
    assert [threads.default_threads(n) for n in (1, 2, 4)] == [3, 1, 1]
    monkeypatch.delattr(os, "sched_getaffinity")
    assert threads.default_threads(2) == 32


@pytest.mark.parametrize("local_ranks, parts", [(1, 4), (2, 2), (4, 1)])
def test_the_cpu_backends_update_threads_are_the_cores_shared_among_the_local_ranks(
        monkeypatch, local_ranks, parts):
    """A large NumPy optimizer update splits into a block per thread: on 4 cores, 4 blocks in
    a plain run, 2 on each of 2 ranks of the machine, 1 on each of 4."""
    from dnn.backends.cpu import PARALLEL_MIN_SIZE, CpuBackend

    ranks = SingleProcess()
    ranks.local_size = local_ranks  # a rank of a job with local_ranks on this machine
    monkeypatch.setattr(distributed, "_process", ranks)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    blocks = []
    CpuBackend(c_kernels=False)._in_parts(lambda param: blocks.append(param.shape[0]),
                                          (np.zeros((64, PARALLEL_MIN_SIZE // 64)),))
    assert sorted(blocks) == [64 // parts] * parts


@pytest.mark.skipif(not threads._loaded_blas(), reason="no OpenBLAS mapped in this process "
                                                       "(NumPy's wheels bring one, on Linux)")
def test_the_loaded_openblas_is_given_the_threads(tmp_path):
    """In a process of its own: NumPy's OpenBLAS starts with a thread per core."""
    result = python("-c", (
        "import ctypes, os, numpy\n"
        "from dnn.distributed import threads\n"
        "threads.usable_cores = lambda: 4\n"
        "library = ctypes.CDLL(threads._loaded_blas()[0])\n"
        "count = next(getattr(library, name) for name in ("
        "'scipy_openblas_get_num_threads64_', 'openblas_get_num_threads64_', "
        "'openblas_get_num_threads') if hasattr(library, name))\n"
        "print(threads.limit_blas_threads(4), count())"), unset=threads.THREAD_VARIABLES)
    assert result.stdout.split() == ["1", "1"], result.stderr


def openblas_threads() -> tuple:
    """``(get, set)``: the thread count's getter and setter of the OpenBLAS mapped in this
    process."""
    library = ctypes.CDLL(threads._loaded_blas()[0])

    def first(*names):
        return next(getattr(library, name) for name in names if hasattr(library, name))
    return (first("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                  "openblas_get_num_threads64_", "openblas_get_num_threads"),
            first(*threads.SETTERS))


def fake_cupy(gpus: int) -> types.ModuleType:
    """A ``cupy`` whose process sees ``gpus`` GPUs, the GPU of index i with the UUID
    ``b"gpu-i"``; ``cupy.used`` lists the devices made current."""
    cupy = types.ModuleType("cupy")
    cupy.used = []
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(
            getDeviceCount=lambda: gpus,
            getDeviceProperties=lambda number: {"uuid": f"gpu-{number}".encode()}),
        Device=lambda number: types.SimpleNamespace(use=lambda: cupy.used.append(number)))
    return cupy


class SecondOfTwoRanks(SingleProcess):
    """The second of 2 ranks on one machine, the first having taken the GPU ``first`` (its
    UUID)."""

    def __init__(self, first: bytes):
        super().__init__()
        self.rank, self.size, self.local_rank, self.local_size = 1, 2, 1, 2
        self.first = first

    def gather_objects(self, value) -> list:
        return [self.first, value]


def test_each_local_rank_takes_a_gpu_of_its_own_and_a_shared_one_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "_process", SecondOfTwoRanks(b"gpu-0"))
    cupy = fake_cupy(gpus=2)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    assert distributed.use_local_gpu() == 1 and cupy.used == [1]
    # each rank shown its own GPU (CUDA_VISIBLE_DEVICES per rank): device 0, another UUID
    monkeypatch.setattr(distributed, "_process", SecondOfTwoRanks(b"another"))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(gpus=1))
    assert distributed.use_local_gpu() == 0
    monkeypatch.setattr(distributed, "_process", SecondOfTwoRanks(b"gpu-0"))
    with pytest.raises(UsageError, match=r"^ranks 0 and 1 would share one GPU \(device 0 of "
                                         r"rank 1\): start at most one rank per GPU$"):
        distributed.use_local_gpu()


class PlacedRank(SingleProcess):
    """Rank ``rank`` of ``size``, ``local_rank`` of the ``local_size`` on its machine; every
    other rank took a GPU of a UUID of its own."""

    def __init__(self, rank: int, size: int, local_rank: int, local_size: int):
        super().__init__()
        self.rank, self.size, self.local_rank, self.local_size = (rank, size, local_rank,
                                                                  local_size)

    def gather_objects(self, value) -> list:
        return [value if rank == self.rank else f"rank {rank}'s GPU".encode()
                for rank in range(self.size)]


@pytest.mark.parametrize("rank, size, local_rank, local_size, gpus, device", [
    (1, 2, 0, 1, 2, 0),  # two machines of one rank each, each showing its 2 GPUs
    (3, 4, 1, 2, 4, 1),  # two machines of two ranks each, each showing its 4 GPUs
    (2, 4, 0, 2, 4, 0),  # the same
], ids=["rank 1, first of its machine", "rank 3, second of its machine",
        "rank 2, first of its machine"])
def test_a_rank_takes_the_gpu_of_its_place_on_its_machine_not_of_its_rank(
        monkeypatch, rank, size, local_rank, local_size, gpus, device):
    monkeypatch.setattr(distributed, "_process", PlacedRank(rank, size, local_rank, local_size))
    cupy = fake_cupy(gpus)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    assert distributed.use_local_gpu() == device and cupy.used == [device]


class CapturingStream:
    """A stream whose capture ``end_capture`` ends (``ended``), as CuPy's."""

    def __init__(self):
        self.ended = False

    def begin_capture(self):
        pass

    def end_capture(self):
        self.ended = True
        return "graph"


@pytest.mark.parametrize("raised, seen", [
    (RuntimeError("cudaErrorStreamCaptureInvalidated"), "CaptureError"),
    (KeyboardInterrupt(), "KeyboardInterrupt"), ("terminated", "Terminated")])
def test_a_signal_in_a_capture_goes_through_and_the_drivers_refusal_is_a_capture_error(
        raised, seen):
    """SIGTERM (``dnn train``'s Terminated) or Ctrl-C while a step is captured stops the run;
    only what the GPU stack raises is the capture's failure (the step then runs eagerly)."""
    from dnn.backends.cuda_graphs import CudaGraphs
    from dnn.errors import Terminated

    graphs = CudaGraphs.__new__(CudaGraphs)  # its capture alone: no CuPy needed
    graphs._stream = CapturingStream()
    error = Terminated(15) if raised == "terminated" else raised

    def step():
        raise error
    with pytest.raises(BaseException) as caught:
        graphs.capture(step)
    assert type(caught.value).__name__ == seen and graphs._stream.ended


def test_a_signal_in_a_replay_stops_the_run():
    """SIGTERM (``dnn train``'s Terminated) while a captured step is replayed stops ``fit``
    instead of sending it to the eager step."""
    from dnn.errors import Terminated
    from dnn.replay import ReplayBackend

    class StoppedInAReplay(ReplayBackend):
        def capture(self, step):
            graph = super().capture(step)

            def stopped():
                raise Terminated(15)
            graph.replay = stopped
            return graph

    model = dnn.Sequential([Dense(10, activation="softmax")], seed=0,
                           backend=StoppedInAReplay())
    model.compile("sgd")
    with pytest.raises(Terminated):
        model.fit(*data(64), batch_size=16, verbose=0)


def test_workers_start_the_venvs_mpiexec_with_this_python():
    pytest.importorskip("mpi4py")
    command = launcher.workers_command(3, ["train", "--epochs", "1"])
    assert command[1:] == ["-n", "3", sys.executable, "-m", "dnn", "train", "--epochs", "1"]
    assert Path(command[0]).name == "mpiexec"


def test_workers_start_a_job_whose_ranks_are_no_processes_of_a_rank(monkeypatch):
    """``dnn train --workers`` run by a rank of another job (marked in the environment):
    the job it starts has ranks of its own, which install their own hooks."""
    pytest.importorskip("mpi4py")
    from click.testing import CliRunner

    from dnn.cli import commands, main

    monkeypatch.setattr(commands, "usable_cores", lambda: 2)
    monkeypatch.setenv(failure.RANK_PROCESS, str(os.getpid()))
    started = []
    monkeypatch.setattr(commands.subprocess, "call",
                        lambda command, env: started.append(env) or 0)
    result = CliRunner().invoke(main, ["train", "--epochs", "1", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert started and failure.RANK_PROCESS not in started[0] and "PATH" in started[0]


def test_more_workers_than_cores_are_refused_before_mpiexec_starts(monkeypatch):
    from click.testing import CliRunner

    from dnn.cli import commands, main

    monkeypatch.setattr(commands, "usable_cores", lambda: 2)
    started = []
    monkeypatch.setattr(commands.subprocess, "call", lambda *a, **k: started.append(a) or 0)
    result = CliRunner().invoke(main, ["train", "--epochs", "1", "--workers", "1000000"])
    assert result.exit_code == 2 and not started
    assert result.output.strip().splitlines()[-1] == (
        "Error: --workers 1000000 is more than the 2 cores this machine gives: for more "
        "processes, or other machines, start dnn train under mpiexec yourself "
        "(docs/distributed.md)")


@pytest.mark.parametrize("variable", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE"])
def test_a_launchers_variable_without_its_launcher_is_named(variable):
    pytest.importorskip("mpi4py")
    run = python("-m", "dnn", "train", "--epochs", "1", unset=launcher.SIZE_VARIABLES,
                 **{variable: "2"})
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "Error: PMI_SIZE or OMPI_COMM_WORLD_SIZE says 2 processes, but MPI started 1: start "
        "the job with mpiexec, or unset the variable to train in one process")


def test_the_benchmarks_help_describes_it_in_whole_sentences():
    result = subprocess.run([sys.executable, ROOT / "scripts" / "bench_distributed.py",
                             "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert ("Data-parallel benchmark: the step and the gradient all-reduce on 1 and 2 MPI ranks "
            "(more where the machine has the cores), and a model of the all-reduce's share of a "
            "step at 8, 64 and 512. options:") in text
    assert "--rounds ROUNDS rounds, each timing" in text


# -- two ranks ----------------------------------------------------------------------------------
def worker_equivalence(folder: str) -> None:
    """Every case trained by ``fit`` on this rank; its weights and iterations saved."""
    rank = distributed.communicator().rank
    for case in CASES:
        model = trained(case)
        np.savez(Path(folder, f"{case}-{rank}.npz"), *model.get_weights(),
                 iterations=int(model.optimizer.iterations))


def worker_references(folder: str) -> None:
    """Every case trained in one process, plainly and summing the shards."""
    for case in CASES:
        np.savez(Path(folder, f"{case}-plain.npz"), *trained(case).get_weights())
        np.savez(Path(folder, f"{case}-shards.npz"), *summing_the_shards(case))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """The folder of :func:`worker_equivalence`'s files, run on 2 ranks, and of
    :func:`worker_references`', run in one process; each with one BLAS thread, since
    OpenBLAS's products round differently on more."""
    if _mpi_missing():
        pytest.skip(_mpi_missing())
    folder = tmp_path_factory.mktemp("two-ranks")
    assert_ran(mpiexec("equivalence", folder, timeout=120))
    assert_ran(subprocess.run([sys.executable, __file__, "references", folder], timeout=120,
                              capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}))
    return folder


def weights_of(folder: Path, case: str, rank) -> list[np.ndarray]:
    """The weights :func:`worker_equivalence` (``rank`` 0 or 1) or :func:`worker_references`
    (``rank`` ``"plain"`` or ``"shards"``) saved for ``case``."""
    with np.load(folder / f"{case}-{rank}.npz") as archive:
        return [archive[f"arr_{index}"] for index in range(4)]


@needs_mpi
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_equal_bit_for_bit_one_process_summing_the_shards_in_rank_order(
        two_ranks, case):
    ranks = [weights_of(two_ranks, case, rank) for rank in (0, 1)]
    for mine, theirs in zip(*ranks):  # every rank ends with the same bytes
        assert mine.tobytes() == theirs.tobytes()
    for mine, reference in zip(ranks[0], weights_of(two_ranks, case, "shards")):
        assert mine.tobytes() == reference.tobytes()


@needs_mpi
@pytest.mark.parametrize("case", ["sgd", "rmsprop", "adam"])
def test_two_ranks_are_within_rounding_of_a_plain_run_after_50_steps(two_ranks, case):
    """Two ranks sum a batch's rows in another order than one process: after 50 steps each
    weight differs from a plain run's by less than 1e-3 of the most the steps moved any
    weight of its array (a share weighted wrongly differs by a sizeable part of it). SGD and
    RMSprop stay near 1e-6 of it; Adam, which moves a weight of a near-zero gradient by up
    to its learning rate whatever the gradient's rounding, reaches 6e-5 on some CPUs (the
    bit-for-bit check against summing the shards is the exact one)."""
    with np.load(two_ranks / f"{case}-0.npz") as archive:
        assert int(archive["iterations"]) == 50
    initial = seed_network(CASES[case][0]).get_weights()
    for mine, reference, start in zip(weights_of(two_ranks, case, 0),
                                      weights_of(two_ranks, case, "plain"), initial):
        assert np.max(np.abs(mine - reference)) < 1e-3 * np.max(np.abs(reference - start))


def worker_graph(folder: str, inputs: str = "one") -> None:
    """A functional model whose layers make a graph (tests/test_merging.py's, or
    tests/test_multi_input.py's of three ``inputs``, or tests/test_multi_output.py's of three
    outputs), trained by ``fit`` on this rank, or in one process (then saved as ``plain``)."""
    from tests.test_merging import residual_model
    from tests.test_multi_input import three_input_model
    from tests.test_multi_output import THREE_OUTPUT_COMPILE, three_output_data, three_output_model

    ranks = distributed.communicator()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 9)).astype(np.float32)
    compiled = {"loss": "categorical_crossentropy"}
    if inputs == "one":
        model, x, y = residual_model(), x[:, :6], to_categorical(np.argmax(x[:, :4], axis=1), 4)
    elif inputs == "three":
        model, x, y = (three_input_model(), [x[:, :4], x[:, 4:7], x[:, 7:]],
                       to_categorical(np.argmax(x[:, :3], axis=1), 3))
    else:  # three outputs
        model, (x, y), compiled = (three_output_model(), three_output_data(200),
                                   THREE_OUTPUT_COMPILE)
    model.compile(optimizer="adam", **compiled)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    np.savez(Path(folder, f"graph-{ranks.rank if ranks.size > 1 else 'plain'}.npz"),
             *model.get_weights())


@needs_mpi
@pytest.mark.parametrize("inputs, weights", [("one", 8), ("three", 12), ("outputs", 8)])
def test_two_ranks_train_a_graph_of_layers_as_one_process(tmp_path, inputs, weights):
    """Its gradients, summed at the outputs several layers take, are summed over the ranks
    as a chain's; the rows of each of several inputs are shared out alike, as are the
    targets of each of several outputs and their losses."""
    assert_ran(mpiexec("graph", tmp_path, inputs))
    assert_ran(subprocess.run([sys.executable, __file__, "graph", tmp_path, inputs],
                              timeout=60, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}))
    runs = {}
    for name in ("0", "1", "plain"):
        with np.load(tmp_path / f"graph-{name}.npz") as archive:
            runs[name] = [archive[key] for key in sorted(archive.files,
                                                         key=lambda key: int(key[4:]))]
    assert len(runs["plain"]) == weights
    for mine, theirs, reference in zip(runs["0"], runs["1"], runs["plain"], strict=True):
        assert mine.tobytes() == theirs.tobytes()
        assert np.max(np.abs(mine - reference)) < 1e-6


def worker_callbacks(folder: str) -> None:
    """Rank 0 alone writes; a stop asked on rank 1 alone stops both after the same batch;
    the epoch figures, validation's and evaluate's included, are every rank's."""
    rank = distributed.communicator().rank
    model = seed_network("rmsprop")
    stop = dnn.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: setattr(
        model, "stop_training", rank == 1 and batch == 2))
    history = model.fit(*data(1000), batch_size=BATCH, epochs=3, validation_split=0.2,
                        verbose=2, callbacks=[dnn.callbacks.CSVLogger(f"{folder}/{rank}.csv"),
                                              stop, OwnWriter(folder, "own"),
                                              OwnFile(folder, "plain")])
    evaluated = model.evaluate(*data(300), verbose=1)
    np.savez(Path(folder, f"weights-{rank}.npz"), *model.get_weights())
    x, y = data(5)
    report(folder, "callbacks", iterations=int(model.optimizer.iterations),
           history=history.history, evaluate=evaluated,
           on_batch=[model.train_on_batch(x, y), model.test_on_batch(x, y)])


@needs_mpi
def test_rank_0_alone_writes_and_every_rank_decides_alike(tmp_path):
    result = mpiexec("callbacks", tmp_path)
    assert_ran(result)
    assert sorted(path.name for path in tmp_path.glob("*.csv")) == ["0.csv"]
    assert sorted(path.name for path in tmp_path.glob("*.txt")) == [  # a user's writer too
        "own-0.txt", "plain-0.txt", "plain-1.txt"]
    ranks = reports(tmp_path, "callbacks")
    assert ranks[0] == ranks[1] and ranks[0]["iterations"] == 3  # and each on_batch's figures
    assert len(ranks[0]["history"]["val_loss"]) == 1
    assert result.stdout.count("Epoch 1/3") == 1  # printed by rank 0 alone
    assert result.stdout.count("accuracy: ") == 3  # the epoch's 2 and evaluate's, rank 0's
    model = seed_network("rmsprop")
    model.set_weights(weights_of(tmp_path, "weights", 0))
    assert ranks[0]["evaluate"] == pytest.approx(model.evaluate(*data(300), verbose=0),
                                                 rel=1e-6)


def worker_resume(folder: str) -> None:
    """Two epochs straight, and one saved by rank 0 then resumed: the same bytes."""
    rank = distributed.communicator().rank
    x, y = data(1000)
    straight = seed_network("adam")
    straight.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    path = Path(folder, "model.npz")
    seed_network("adam").fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                             callbacks=[dnn.callbacks.ModelCheckpoint(path)])
    resumed = dnn.load_model(path)
    resumed.fit(x, y, batch_size=BATCH, epochs=2, initial_epoch=resumed.epochs_done,
                verbose=0)
    for mine, theirs in zip(straight.get_weights(), resumed.get_weights()):
        assert mine.tobytes() == theirs.tobytes(), f"rank {rank}: resumed differently"
    np.savez(Path(folder, f"resumed-{rank}.npz"), *resumed.get_weights())


@needs_mpi
def test_a_checkpoint_of_two_ranks_resumes_on_two_and_on_one(tmp_path):
    assert_ran(mpiexec("resume", tmp_path))
    ranks = [weights_of(tmp_path, "resumed", rank) for rank in (0, 1)]
    model = dnn.load_model(tmp_path / "model.npz")  # written once, by rank 0
    model.fit(*data(1000), batch_size=BATCH, epochs=2, initial_epoch=1, verbose=0)
    for mine, theirs, alone in zip(*ranks, model.get_weights()):
        assert mine.tobytes() == theirs.tobytes()
        assert np.max(np.abs(mine - alone)) < 1e-6


def worker_resume_perturbed(folder: str) -> None:
    """A checkpoint of an epoch (RMSprop, its rate decaying with the iterations) resumed
    twice on every rank: as loaded, and with rank 1's weights, mean squares, iterations and
    shuffle state changed after loading, before ``fit``; each run's end saved."""
    rank = distributed.communicator().rank
    x, y = data(1000)
    path = Path(folder, "model.npz")
    model = dnn.Sequential([Dense(64, activation="relu"), Dense(10, activation="softmax")],
                           seed=0)
    model.compile(optimizer=dnn.optimizers.RMSprop(
        dnn.optimizers.schedules.ExponentialDecay(0.002, decay_steps=5, decay_rate=0.5)),
        loss="categorical_crossentropy")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[dnn.callbacks.ModelCheckpoint(path)])
    for run in ("as-loaded", "perturbed"):
        resumed = dnn.load_model(path)
        optimizer = resumed.optimizer
        if run == "perturbed" and rank == 1:
            resumed.set_weights([weights + 0.01 for weights in resumed.get_weights()])
            for state in optimizer.states:
                state["mean_square"] += 0.5
            optimizer.iterations = int(optimizer.iterations) + 40
            resumed.rng.random(5)  # its shuffle state drawn on
        history = resumed.fit(x, y, batch_size=BATCH, epochs=3,
                              initial_epoch=resumed.epochs_done, verbose=0)
        np.savez(Path(folder, f"{run}-{rank}.npz"), *resumed.get_weights(),
                 *(state["mean_square"] for state in optimizer.states),
                 iterations=int(optimizer.iterations), shuffle=resumed.rng.random(4))
        report(folder, run, history=history.history)


@needs_mpi
def test_after_resuming_every_rank_trains_from_rank_0s_state(tmp_path):
    """Rank 1's weights, optimizer state (mean squares), iterations (which the learning rate
    follows) and shuffle state, changed after loading the checkpoint, change nothing: every
    rank starts from rank 0's and ends with the bytes of a run where rank 1 kept its own."""
    assert_ran(mpiexec("resume-perturbed", tmp_path))
    ends = {}
    for run in ("as-loaded", "perturbed"):
        for rank in (0, 1):
            with np.load(tmp_path / f"{run}-{rank}.npz") as archive:
                ends[run, rank] = {name: archive[name] for name in archive.files}
    reference = ends["as-loaded", 0]
    assert len(reference) == 4 + 4 + 2 and int(reference["iterations"]) == 3 * 8
    for end in ends.values():
        assert sorted(end) == sorted(reference)
        for name, values in end.items():
            assert values.tobytes() == reference[name].tobytes(), name
    for run in ("as-loaded", "perturbed"):
        histories = reports(tmp_path, run)
        assert histories[0] == histories[1] == reports(tmp_path, "as-loaded")[0]


class Batches:
    """A ``PyDataset``-style source: the same batches of 100 rows on every rank."""

    def __init__(self):
        self.x, self.y = data(400)

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.x[100 * index:100 * (index + 1)], self.y[100 * index:100 * (index + 1)]


def worker_stream(folder: str) -> None:
    """A model built by its first batch from a source, from weights drawn apart on each rank
    (no seed): trained from rank 0's, each rank on its share of every batch."""
    rank = distributed.communicator().rank
    model = dnn.Sequential([Dense(32, activation="relu"), Dense(10, activation="softmax")])
    model.compile("adam")
    history = model.fit(Batches(), epochs=2, shuffle=True, verbose=0)
    np.savez(Path(folder, f"stream-{rank}.npz"), *model.get_weights())
    report(folder, "stream", history=history.history)


@needs_mpi
def test_batches_from_a_source_are_shared_and_training_starts_from_rank_0(tmp_path):
    assert_ran(mpiexec("stream", tmp_path))
    ranks = [weights_of(tmp_path, "stream", rank) for rank in (0, 1)]
    for mine, theirs in zip(*ranks):
        assert mine.tobytes() == theirs.tobytes()
    histories = reports(tmp_path, "stream")
    assert histories[0] == histories[1] and len(histories[0]["history"]["loss"]) == 2


class InOrder:
    """An iterable source (not a ``PyDataset``): ``data(samples)`` in batches of BATCH rows,
    in order, anew each pass."""

    def __init__(self, samples: int):
        self.x, self.y = data(samples)

    def __iter__(self):
        for start in range(0, len(self.x), BATCH):
            yield self.x[start:start + BATCH], self.y[start:start + BATCH]


def first_batches(count: int, targets: bool = True, rows: int = 100):
    """A generator of the first ``count`` batches of ``rows`` rows of ``data(500)``: ``(x,
    y)``, or ``x`` alone without ``targets``."""
    x, y = data(500)
    for start in range(0, count * rows, rows):
        yield (x[start:start + rows], y[start:start + rows]) if targets else x[start:start + rows]


def caught(call) -> tuple:
    """``(call()'s result, [[warning class, message]...])``."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = call()
    return result, [(type(warning.message).__name__, str(warning.message)) for warning in seen]


def worker_sources(folder: str) -> None:
    """Sources of batches on 2 ranks: the same batches ("zero-row", in order: rank 1 has no
    row of each epoch's last batch), its sum of the shards in one process (rank 0 alone,
    with the ranks' one BLAS thread), and sources of 5 batches on rank 0, 3 on rank 1."""
    rank = distributed.communicator().rank
    optimizer, samples, epochs = CASES["zero-row"]
    model = seed_network(optimizer)
    model.fit(InOrder(samples), epochs=epochs, verbose=0)
    np.savez(Path(folder, f"in-order-{rank}.npz"), *model.get_weights())
    if rank == 0:
        np.savez(Path(folder, "in-order-shards.npz"),
                 *summing_the_shards("zero-row", shuffle=False))
    count = 5 if rank == 0 else 3
    ended = seed_network("sgd")
    history, fit_warnings = caught(lambda: ended.fit(first_batches(count), epochs=2,
                                                     verbose=0))
    np.savez(Path(folder, f"unequal-{rank}.npz"), *ended.get_weights())
    stepped = seed_network("sgd")
    stepped_history, stepped_warnings = caught(lambda: stepped.fit(
        first_batches(count), epochs=3, steps_per_epoch=2, verbose=0))
    evaluated, evaluate_warnings = caught(lambda: ended.evaluate(first_batches(count),
                                                                 verbose=0))
    predicted = ended.predict(first_batches(count, targets=False), verbose=0)
    report(folder, "sources", history=history.history,
           iterations=int(ended.optimizer.iterations), fit_warnings=fit_warnings,
           stepped_history=stepped_history.history,
           stepped_iterations=int(stepped.optimizer.iterations),
           stepped_warnings=stepped_warnings, evaluate=evaluated,
           evaluate_warnings=evaluate_warnings, predicted=len(predicted))


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """The folder of :func:`worker_sources`' files, run on 2 ranks within 60 seconds."""
    if _mpi_missing():
        pytest.skip(_mpi_missing())
    folder = tmp_path_factory.mktemp("sources")
    assert_ran(mpiexec("sources", folder, timeout=60))
    return folder


@needs_mpi
def test_the_same_batches_from_a_source_equal_one_process_summing_the_shards(sources):
    ranks = [weights_of(sources, "in-order", rank) for rank in (0, 1)]
    for mine, theirs, reference in zip(*ranks, weights_of(sources, "in-order", "shards")):
        assert mine.tobytes() == theirs.tobytes() == reference.tobytes()


def ended_on(rank: int, batch: int, why: str) -> list:
    """The warning of a source that ended on ``rank`` 1 at ``batch``, and Keras' where it ran
    out."""
    warning = ["UnequalSources", f"the ranks' sources of batches differ: rank {rank} has no "
               f"batch {batch} in this epoch ({why}), rank 0 has one; every rank stops there"]
    if why != "it ran out":
        return [warning]
    return [warning, ["RanOutOfData", "your input ran out of data; interrupting training: make "
                      "sure that your generator or dataset can yield at least steps_per_epoch "
                      "* epochs batches"]]


@needs_mpi
def test_a_source_that_ends_early_on_one_rank_ends_every_rank_as_one_process_of_it(sources):
    """Rank 1's generator gives 3 batches, rank 0's 5: every rank ends as one process given
    the 3 does (Keras' semantics), with the same weights and figures, and a warning."""
    ranks = reports(sources, "sources")
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["evaluate"] == ranks[1]["evaluate"]
    # without steps_per_epoch: epoch 1 is 3 batches, and in epoch 2 rank 1's source runs out
    assert ranks[0]["iterations"] == 3 and len(ranks[0]["history"]["loss"]) == 1
    assert ranks[0]["fit_warnings"] == [*ended_on(1, 3, "its pass ended"),
                                        *ended_on(1, 0, "it ran out")]
    # 2 steps an epoch: the second epoch stops after one batch, when rank 1's runs out
    assert ranks[0]["stepped_iterations"] == 3
    assert len(ranks[0]["stepped_history"]["loss"]) == 2
    assert ranks[0]["stepped_warnings"] == ended_on(1, 1, "it ran out")
    assert ranks[0]["evaluate_warnings"] == ended_on(1, 3, "its pass ended")
    assert ranks[0] == {**ranks[1], "predicted": 500}  # predict: each rank its own source
    assert ranks[1]["predicted"] == 300
    alone = seed_network("sgd")
    with pytest.warns(RanOutOfData):
        history = alone.fit(first_batches(3), epochs=2, verbose=0)
    assert list(ranks[0]["history"]) == list(history.history)
    for name, values in history.history.items():
        assert ranks[0]["history"][name] == pytest.approx(values, rel=1e-6)
    for mine, theirs, reference in zip(*(weights_of(sources, "unequal", rank)
                                         for rank in (0, 1)), alone.get_weights()):
        assert mine.tobytes() == theirs.tobytes()
        assert np.max(np.abs(mine - reference)) < 1e-6
    assert ranks[0]["evaluate"] == pytest.approx(alone.evaluate(first_batches(3), verbose=0),
                                                 rel=1e-6)


def worker_unequal_rows() -> None:
    """Batches of 100 rows on rank 0, 90 on rank 1."""
    rank = distributed.communicator().rank
    seed_network("sgd").fit(first_batches(3, rows=100 if rank == 0 else 90), verbose=0)


@needs_mpi
def test_batches_of_different_rows_on_the_ranks_end_the_job_with_one_error():
    result = mpiexec("unequal-rows", timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("UsageError: every rank must give the same batches: batch 0 has 90 rows on rank "
            "1, 100 on rank 0") in result.stderr
    assert "rank 1: Traceback" not in result.stderr  # rank 0's report ends the job


OTHER_VERSION = "0.0.0+rank1"


def worker_mismatch(setting: str) -> None:
    """``fit`` on every rank, rank 1 differing from rank 0 in ``setting``: ``fit``'s
    batch_size, dnn's version, the backend, the model's dtype or the number of samples."""
    from dnn.replay import EagerReplayBackend

    other = distributed.communicator().rank == 1
    if other and setting == "version":
        dnn.__version__ = OTHER_VERSION  # dnn.__version__, as fit reads it
    model = seed_network("sgd", backend=EagerReplayBackend() if other and setting == "backend"
                         else None, dtype="float64" if other and setting == "dtype" else "float32")
    samples = 200 if other and setting == "samples" else 256
    model.fit(*data(samples), batch_size=64 if other and setting == "batch_size" else BATCH,
              verbose=0)


@needs_mpi
@pytest.mark.parametrize("setting, difference", [
    ("batch_size", "batch_size 64, rank 0 128"),
    ("version", f"dnn version {OTHER_VERSION!r}, rank 0 {dnn.__version__!r}"),
    ("backend", "backend 'replay-eager', rank 0 'cpu'"),
    ("dtype", "dtype 'float64', rank 0 'float32'"),
    ("samples", "samples (200, 784), rank 0 (256, 784)")])
def test_settings_that_differ_between_ranks_end_the_job_with_a_usage_error(setting, difference):
    """One line, rank 0's (rank 1 meets the same difference, and is ended before it reports
    it), within 30 seconds."""
    result = mpiexec("mismatch", setting, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "UsageError:" in line]
    assert errors == ["dnn.errors.UsageError: every rank must run with the same settings: "
                      f"rank 1 has {difference}"], result.stderr


def worker_fails() -> None:
    """Rank 1 fails in its third batch; rank 0 goes on into the next gradient sum."""
    rank = distributed.communicator().rank

    def fail(batch, logs):
        if rank == 1 and batch == 2:
            raise RuntimeError("injected on rank 1")
    seed_network("sgd").fit(*data(2000), batch_size=BATCH, epochs=100, verbose=0,
                            callbacks=[dnn.callbacks.LambdaCallback(on_train_batch_end=fail)])


def worker_blas_threads(folder: str) -> None:
    """Each rank's OpenBLAS threads, set to one more than the rule gives (the cores this
    process may run on, divided by the 2 ranks of this machine) before the ranks are joined,
    and as joining them left them."""
    assert distributed._process is None  # not joined yet
    get, set_ = openblas_threads()
    rule = max(1, len(os.sched_getaffinity(0)) // 2)
    set_(ctypes.c_int(rule + 1))
    before = get()
    ranks = distributed.communicator()
    report(folder, "blas", rule=rule, before=before, after=get(), local_size=ranks.local_size,
           own=threads.process_threads())


@needs_mpi
@pytest.mark.skipif(not threads._loaded_blas() or not hasattr(os, "sched_getaffinity"),
                    reason="no OpenBLAS mapped in this process (NumPy's wheels bring one, on "
                           "Linux)")
def test_joining_the_ranks_gives_each_ranks_blas_the_cores_shared_among_the_local_ranks(
        tmp_path):
    """Under mpiexec -n 2, no thread variable set: each rank's BLAS (and dnn's own threads)
    go from one more than the rule to the rule itself when the ranks are joined."""
    assert_ran(mpiexec("blas-threads", tmp_path, timeout=30, unset=threads.THREAD_VARIABLES))
    for rank in reports(tmp_path, "blas"):
        assert rank["local_size"] == 2 and rank["before"] == rank["rule"] + 1
        assert rank["after"] == rank["own"] == rank["rule"], rank


@needs_mpi
def test_a_failure_on_one_rank_ends_the_job_within_30_seconds():
    started = time.monotonic()
    result = mpiexec("fails", timeout=30)
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rank 1: Traceback" in result.stderr
    assert "RuntimeError: injected on rank 1" in result.stderr


def worker_ends(when: str, how: str) -> None:
    """Rank 1 ends by ``how`` ("exit": ``sys.exit(3)``; "raise": a RuntimeError) ``when``:
    "after joining", once ``distributed.communicator()`` joined the ranks, before ``fit``;
    "before joining", after ``from dnn import distributed`` (at this file's top) but before
    the ranks are joined.  Rank 0 trains, waiting in ``MPI_Init`` or a sum for rank 1.  With
    ``when`` "alone", rank 1 raises before joining and rank 0 exits at once without starting
    MPI: rank 1 waits :data:`failure.JOIN_WAIT` (2 s here) for it."""
    failure.JOIN_WAIT = 2
    if when == "after joining":
        distributed.communicator()
    if launcher.launched_rank() == 1:
        if how == "exit":
            sys.exit(3)
        raise RuntimeError(f"injected on rank 1 {when}")
    if when != "alone":
        seed_network("sgd").fit(*data(256), batch_size=BATCH, verbose=0)


def assert_ended_by_rank_1(result: subprocess.CompletedProcess, status: int, started: float,
                           error: str = "") -> None:
    """The job ended with ``status`` within 30 seconds of ``started``, rank 1 reporting
    ``error`` (a RuntimeError's message) with its traceback where given."""
    assert time.monotonic() - started < 30
    assert result.returncode == status, result.stdout + result.stderr
    if error:
        assert "rank 1: Traceback" in result.stderr
        assert f"RuntimeError: {error}" in result.stderr


@needs_mpi
@pytest.mark.parametrize("runner", [(), ("-m", "mpi4py")], ids=["python", "python -m mpi4py"])
def test_an_exception_on_one_rank_before_joining_ends_the_job_within_30_seconds(runner):
    """From ``from dnn import distributed`` on: rank 1 starts MPI only to abort the job, once
    rank 0 starts it too (in ``fit``)."""
    started = time.monotonic()
    result = mpiexec("ends", "before joining", "raise", timeout=30, runner=runner)
    assert_ended_by_rank_1(result, 1, started, "injected on rank 1 before joining")


@needs_mpi
@pytest.mark.skipif(sys.platform == "win32", reason="SIGALRM: POSIX")
def test_a_rank_failing_before_joining_ends_a_job_whose_others_never_start_mpi():
    """Rank 0 exits without starting MPI, so that rank 1 would wait in MPI_Init for ever:
    SIGALRM ends it after failure.JOIN_WAIT, and MPICH's mpiexec gives its number."""
    started = time.monotonic()
    result = mpiexec("ends", "alone", "raise", timeout=30)
    assert_ended_by_rank_1(result, 14, started, "injected on rank 1 alone")


@needs_mpi
@pytest.mark.parametrize("how, status, error", [
    ("exit", 3, ""), ("raise", 1, "injected on rank 1 after joining")])
def test_under_mpi4pys_runner_a_rank_ending_after_joining_ends_the_job_within_30_seconds(
        how, status, error):
    """``mpiexec -n 2 python -m mpi4py script.py`` (docs/distributed.md): ``sys.exit(3)``,
    which calls no hook, ends the job with 3 too (plain ``python`` waits for ever)."""
    started = time.monotonic()
    result = mpiexec("ends", "after joining", how, timeout=30, runner=("-m", "mpi4py"))
    assert_ended_by_rank_1(result, status, started, error)


# -- dnn train under mpiexec ---------------------------------------------------------------------
FAILING = {  # a plugin module: a dataset and an optimizer that fail on rank 1 alone, and an
    # optimizer that writes $PIDS/rank-N (its process id) at its first step
    "ranked_plugins": """
        import os

        import numpy as np

        from dnn.errors import DataError
        from dnn.optimizers import SGD

        RANK = os.environ.get("PMI_RANK")


        class Tiny:
            def load(self, data_dir=None):
                if RANK == "1" and os.environ.get("FAIL") == "load":
                    raise DataError("no data on rank 1")
                rng = np.random.default_rng(0)
                train = 900 if RANK == "1" and os.environ.get("FAIL") == "shape" else 1000
                centres = rng.random((3, 12))
                def split(n):
                    labels = rng.integers(0, 3, size=n)
                    x = 0.7 * centres[labels] + 0.3 * rng.random((n, 12))
                    return x.astype(np.float32), labels
                return split(train), split(200)


        class FailsOnRank1(SGD):
            def update(self, param, grad, state):
                if RANK == "1" and int(self.iterations) == 5:
                    raise RuntimeError("step 5 failed on rank 1")
                super().update(param, grad, state)


        class MarksItsStart(SGD):
            marked = False

            def update(self, param, grad, state):
                if not self.marked and os.environ.get("PIDS"):
                    path = os.path.join(os.environ["PIDS"], f"rank-{RANK}")
                    with open(path + ".part", "w") as file:
                        file.write(str(os.getpid()))
                    os.replace(path + ".part", path)
                    self.marked = True
                super().update(param, grad, state)
    """}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    """PYTHONPATH for ``dnn`` with the plugins of :data:`FAILING` (dataset ``tiny``,
    optimizers ``fails`` and ``marks``) installed."""
    import textwrap

    folder = tmp_path_factory.mktemp("site")
    info = folder / "dnn_ranked_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dnn-ranked-plugins\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[dnn.datasets]\ntiny = ranked_plugins:Tiny\n"
        "[dnn.optimizers]\nfails = ranked_plugins:FailsOnRank1\n"
        "marks = ranked_plugins:MarksItsStart\n")
    (folder / "ranked_plugins.py").write_text(textwrap.dedent(FAILING["ranked_plugins"]))
    return os.pathsep.join([str(folder), str(ROOT)])


RESUME = ["-m", "dnn", "train", "--dataset", "tiny", "--batch-size", "64"]
TRAIN = [*RESUME, "--hidden", "16", "--optimizer", "sgd", "--lr", "0.05"]


def plain_dnn(site: str, *arguments) -> subprocess.CompletedProcess:
    """``python -m dnn ARGUMENTS`` in one process, one BLAS thread."""
    return python(*arguments, OMP_NUM_THREADS="1", PYTHONPATH=site)


def history_of(path: Path) -> list[float]:
    return [epoch["loss"] for epoch in json.loads(path.read_text())["epochs"]]


@needs_mpi
def test_mpiexec_dnn_train_prints_one_test_line_and_writes_each_file_once(site, tmp_path):
    """Rank 0 runs in ``tmp_path``, rank 1 in a folder of its own, with the same relative
    paths: whatever rank 1 wrote would be in its folder, which stays empty."""
    pytest.importorskip("matplotlib")
    files = {name: tmp_path / name
             for name in ("two.json", "two.npz", "two.png", "one.json", "board")}
    arguments = [*TRAIN, "--epochs", "2", *(option for name, flag in (
        ("two.json", "--history"), ("two.npz", "--save"), ("two.png", "--plot"),
        ("board", "--tensorboard")) for option in (flag, name))]
    own = tmp_path / "rank-1"
    own.mkdir()
    result = subprocess.run(
        [launcher.mpiexec(), "-n", "1", "-wdir", tmp_path, sys.executable, *arguments, ":",
         "-n", "1", "-wdir", own, sys.executable, *arguments], capture_output=True, text=True,
        timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": site})
    assert_ran(result)
    assert result.stdout.count("test: loss") == 1 and result.stdout.count("Epoch 2/2") == 1
    assert list(own.iterdir()) == []
    own.rmdir()
    assert files["two.png"].read_bytes().startswith(b"\x89PNG")
    writers = {path.name.split(".")[-2] for path in files["board"].rglob("events.out.*")}
    assert len(writers) == 1  # the event files of one process (events.out.tfevents.*.PID.N)
    assert_ran(plain_dnn(site, *TRAIN, "--epochs", "2", "--history", files["one.json"]))
    assert history_of(files["two.json"]) == pytest.approx(history_of(files["one.json"]),
                                                         rel=1e-5)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(files)
    # resumed on 2 ranks and on 1: the same third epoch
    resumed = mpiexec(*RESUME, "--resume", files["two.npz"], "--epochs", "3", "--save",
                      tmp_path / "on-two.npz", "--history", files["two.json"],
                      environment={"PYTHONPATH": site})
    assert_ran(resumed)
    assert len(history_of(files["two.json"])) == 3
    assert_ran(plain_dnn(site, *RESUME, "--resume", files["two.npz"], "--epochs", "3",
                         "--save", tmp_path / "on-one.npz"))
    for on_two, on_one in zip(dnn.load_model(tmp_path / "on-two.npz").get_weights(),
                              dnn.load_model(tmp_path / "on-one.npz").get_weights()):
        assert np.max(np.abs(on_two - on_one)) < 1e-6


@needs_mpi
def test_dnn_train_workers_runs_the_same_job(site, tmp_path):
    result = plain_dnn(site, *TRAIN, "--epochs", "1", "--workers", "2", "--history",
                       tmp_path / "history.json")
    assert_ran(result)
    assert result.stdout.count("test: loss") == 1
    assert len(history_of(tmp_path / "history.json")) == 1


@needs_mpi
@pytest.mark.parametrize("arguments, fail, status, error", [
    (["--optimizer", "nosuch"], "", 2, "Error: unknown optimizer 'nosuch'"),
    (["--optimizer", "fails"], "", 1, "Error: rank 1: "),
    ([], "load", 1, "Error: rank 1: no data on rank 1"),
    ([], "shape", 2, "Error: every rank must run with the same settings: rank 1 has the "
                     "training data's shape (900, 12), rank 0 (1000, 12)"),
], ids=["a usage error", "a failure in training on rank 1", "a failure on rank 1 at the start",
        "training data of another shape on rank 1"])
def test_an_error_on_any_rank_ends_dnn_train_with_its_status_reported_once(
        site, arguments, fail, status, error):
    started = time.monotonic()
    result = mpiexec(*TRAIN, "--epochs", "3", *arguments, timeout=30,
                     environment={"PYTHONPATH": site, "FAIL": fail})
    assert time.monotonic() - started < 30
    assert result.returncode == status, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0].startswith(error), result.stderr
    assert "Traceback" not in result.stderr


SIGNALLED = {"SIGINT": (130, "Error: interrupted (Ctrl-C); no checkpoint was saved (no --save)"),
             "SIGTERM": (143, "Error: stopped by SIGTERM; files being written were left as they "
                              "were")}


@needs_mpi
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("target", ["mpiexec", "rank 1", "every process"])
@pytest.mark.parametrize("name", sorted(SIGNALLED))
def test_a_signal_to_any_process_ends_dnn_train_with_its_status_reported_once(
        site, tmp_path, target, name):
    """Ctrl-C (SIGINT) and SIGTERM, sent in training to ``mpiexec`` (which forwards it), to
    rank 1 alone, or to every process of the job (as a terminal's Ctrl-C is): the whole job
    ends within 30 seconds with a single process's status, and one line that does not depend
    on which rank reported it (rank 0 waits in a sum that rank 1 left, and cannot)."""
    import signal

    status, expected = SIGNALLED[name]
    command = [launcher.mpiexec(), "-n", "2", sys.executable, *TRAIN, "--optimizer", "marks",
               "--epochs", "100000"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT, start_new_session=True,  # a process group of its own
                           env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": site,
                                "PIDS": str(tmp_path)})
    try:
        started = time.monotonic()
        while not all((tmp_path / f"rank-{rank}").exists() for rank in (0, 1)):
            assert job.poll() is None, job.communicate()
            assert time.monotonic() - started < 60, "the ranks did not start training"
            time.sleep(0.05)
        time.sleep(0.2)  # in training, a few steps on
        signum = getattr(signal, name)
        signalled = time.monotonic()
        if target == "mpiexec":
            os.kill(job.pid, signum)
        elif target == "rank 1":
            os.kill(int((tmp_path / "rank-1").read_text()), signum)
        else:
            os.killpg(job.pid, signum)
        stdout, stderr = job.communicate(timeout=30)
    finally:
        if job.poll() is None:  # the job goes on: end it, and this test fails
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
    assert time.monotonic() - signalled < 30
    assert job.returncode == status, stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [expected], stderr
    assert "Traceback" not in stderr


@needs_mpi
def test_ranks_started_with_other_arguments_are_refused(site):
    command = [sys.executable, *TRAIN, "--epochs", "1"]
    result = subprocess.run(
        [launcher.mpiexec(), "-n", "1", *command, ":", "-n", "1", *command, "--seed", "3"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": site})
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("every rank must run with the same settings: rank 1 has --seed 3, rank 0 0"
            in result.stderr)


# -- NCCL, on the stand-in, with MPI under it ---------------------------------------------------
class FakeNccl(types.ModuleType):
    """``cupy.cuda.nccl`` as CuPy documents it, on the stand-in: a ``NcclCommunicator`` whose
    ``allReduce`` sums device memory (``data.ptr``) over MPI on the given stream; captured
    (recorded for the graph's replays, not run now) while that stream is captured, as NCCL
    2.9 and later are."""

    available = True
    NCCL_SUM, NCCL_INT32, NCCL_INT64 = 0, 2, 4
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 6, 7, 8
    TYPES = {NCCL_FLOAT32: np.float32, NCCL_FLOAT64: np.float64}

    def __init__(self, version: int = 22304):
        super().__init__("cupy.cuda.nccl")
        self.version = version  # NCCL_VERSION_CODE: 22304 is 2.23.4
        self.sums = 0  # sums run (not recorded)
        fake = self

        class NcclCommunicator:
            def __init__(self, ndev: int, commId: bytes, rank: int):  # noqa: N803
                from mpi4py import MPI

                world = MPI.COMM_WORLD
                assert (ndev, rank) == (world.size, world.rank) and len(commId) == 128
                assert set(world.allgather(commId)) == {commId}  # rank 0's, sent to each

            def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
                import cupy

                assert sendbuf == recvbuf and op == fake.NCCL_SUM
                current = cupy.cuda.get_current_stream()
                assert current.ptr == stream
                run = functools.partial(fake.sum_at, recvbuf, count, fake.TYPES[datatype])
                if current._capture is not None:
                    if fake.version < 20900:  # NCCL before 2.9 cannot be captured
                        raise RuntimeError("cudaErrorStreamCaptureUnsupported: operation "
                                           "not permitted when stream is capturing")
                    current._capture.operations.append(run)
                else:
                    current._launch(run)

        self.NcclCommunicator = NcclCommunicator

    @staticmethod
    def get_unique_id() -> bytes:
        return os.urandom(128)

    def get_version(self) -> int:
        return self.version

    def sum_at(self, address: int, count: int, dtype) -> None:
        from mpi4py import MPI

        size = count * np.dtype(dtype).itemsize
        values = np.frombuffer((ctypes.c_char * size).from_address(address), dtype)
        MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
        self.sums += 1


def worker_nccl(folder: str, fail_warm_up_on: str, versions: str = "22304",
                cold_on: str = "none") -> None:
    """The seed network (smaller) on the stand-in's gpu backend, its gradients summed by
    NCCL (:class:`FakeNccl`) in the captured step; rank ``fail_warm_up_on`` (or none) has a
    warm-up that fails; rank ``cold_on`` (or none) has capture memory that is warm only after
    its third warm-up.  ``versions``: each rank's NCCL_VERSION_CODE, comma-separated, or
    one for every rank."""
    import cupy

    from dnn.backends.gpu import GpuBackend
    from dnn.distributed.nccl import NcclCommunicator
    from dnn.errors import CaptureError

    rank = distributed.communicator().rank
    version = int((versions.split(",") * 2)[rank])
    nccl = sys.modules["cupy.cuda.nccl"] = FakeNccl(version)
    backend = GpuBackend()
    if str(rank) == fail_warm_up_on:
        def failing():
            raise CaptureError("injected")
        backend.graph_kernels = failing
    if str(rank) == cold_on:
        warm_ups = []
        backend.warmed_up = lambda: (warm_ups.append(1), len(warm_ups) >= 3)[1]
    model = dnn.Sequential([Dense(32, activation="relu"), Dense(10, activation="softmax")],
                           seed=0, backend=backend)
    model.compile("adam", metrics=["accuracy"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*data(5 * BATCH + 9), batch_size=BATCH, epochs=2, verbose=0)
    assert isinstance(model.communicator, NcclCommunicator)
    np.savez(Path(folder, f"nccl-{rank}.npz"), *model.get_weights())
    report(folder, "nccl", launches=cupy.cuda.graph.launches, sums=nccl.sums,
           warnings=[str(warning.message) for warning in caught])


class SetsNesterovOnRankZero(dnn.callbacks.Callback):
    """Sets SGD's ``nesterov`` (a setting a graph bakes in) after the third batch, on rank 0
    alone (``writes_files``: a callback only rank 0 runs)."""

    writes_files = True

    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            self.model.optimizer.nesterov = True


def worker_nccl_setting(folder: str) -> None:
    """:func:`worker_nccl`'s network trained by SGD with momentum, its step captured with NCCL
    in it, a host setting changed on rank 0 alone mid-epoch."""
    import cupy

    from dnn.backends.gpu import GpuBackend

    sys.modules["cupy.cuda.nccl"] = FakeNccl()
    model = dnn.Sequential([Dense(32, activation="relu"), Dense(10, activation="softmax")],
                           seed=0, backend=GpuBackend())
    model.compile(dnn.optimizers.SGD(0.05, momentum=0.9))

    def epoch_end(epoch, logs):  # before the ranks compare the optimizer's settings
        report(folder, "nccl-setting", launches=cupy.cuda.graph.launches,
               warnings=[str(warning.message) for warning in caught])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*data(5 * BATCH + 9), batch_size=BATCH, epochs=2, verbose=0,
                  callbacks=[SetsNesterovOnRankZero(),
                             dnn.callbacks.LambdaCallback(on_epoch_end=epoch_end)])


@needs_mpi
@pytest.mark.skipif(sys.platform != "linux", reason="stand-in: the stub cuBLAS is built as on "
                                                    "Linux")
def test_a_host_setting_changed_on_one_rank_recaptures_on_every_rank(tmp_path, standin_path):
    """Rank 0 alone changes a setting its graph baked in: every rank warms up and captures
    again together (a rank replaying its graph, whose NCCL sum waits for the others, while the
    other captures would wait for ever), to the epoch's end, where the settings differing
    end the job with a usage error."""
    from tests.cuda_harness import HostCudaBackend

    if not HostCudaBackend.is_available():
        pytest.skip(f"stand-in: {HostCudaBackend.is_available().reason}")
    result = mpiexec("nccl-setting", tmp_path, timeout=60,
                     environment={"PYTHONPATH": standin_path})
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("UsageError: rank 1 has the optimizer's nesterov False, rank 0 True: a callback "
            "that changes training must run alike on every rank") in result.stderr
    ranks = reports(tmp_path, "nccl-setting")
    assert ranks[0] == ranks[1] and ranks[0]["warnings"] == []
    # the first epoch's five full batches: two warm-ups (from an empty pool, then one taking
    # no new block), a capture and its checked replay; from the fourth, the first after the
    # change (whose step takes a temporary more), warm-ups again
    assert ranks[0]["launches"] == 1


def worker_nccl_synchronized(folder: str) -> None:
    """A synchronized BatchNormalization on the stand-in's gpu backend with NCCL: its sums
    in the captured step beside the gradients'."""
    import cupy

    from dnn.backends.gpu import GpuBackend

    nccl = sys.modules["cupy.cuda.nccl"] = FakeNccl()
    model = dnn.Sequential([Dense(16), dnn.layers.BatchNormalization(synchronized=True),
                            dnn.layers.Activation("relu"), Dense(10, activation="softmax")],
                           seed=0, backend=GpuBackend())
    model.compile("adam")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*data(5 * BATCH + 9), batch_size=BATCH, epochs=2, verbose=0)
    rank = distributed.communicator().rank
    np.savez(Path(folder, f"nccl-synchronized-{rank}.npz"), *model.get_weights())
    report(folder, "nccl-synchronized", launches=cupy.cuda.graph.launches, sums=nccl.sums,
           warnings=[str(warning.message) for warning in caught])


@needs_mpi
@pytest.mark.skipif(sys.platform != "linux", reason="stand-in: the stub cuBLAS is built as on "
                                                    "Linux")
def test_synchronized_batch_normalization_sums_inside_the_captured_step(tmp_path,
                                                                         standin_path):
    """Its three sums a step (two forward, one backward) are NCCL's, captured with the
    gradients' sum: the step is still replayed, and both ranks end with the same bytes."""
    from tests.cuda_harness import HostCudaBackend

    if not HostCudaBackend.is_available():
        pytest.skip(f"stand-in: {HostCudaBackend.is_available().reason}")
    assert_ran(mpiexec("nccl-synchronized", tmp_path, timeout=120,
                       environment={"PYTHONPATH": standin_path}))
    for mine, theirs in zip(*(weights_of(tmp_path, "nccl-synchronized", rank)
                              for rank in (0, 1))):
        assert mine.tobytes() == theirs.tobytes()
    ranks = reports(tmp_path, "nccl-synchronized")
    assert ranks[0] == ranks[1]
    # as the plain network's test: 8 launches; 4 sums (3 of them BatchNormalization's) in each
    # of the 14 steps run (12 eager or captured, 2 checked replays run eagerly too)
    assert ranks[0]["warnings"] == [] and ranks[0]["launches"] == 8
    assert ranks[0]["sums"] == 4 * 14


def worker_synchronized_fails(folder: str, stage: str) -> None:
    """:func:`worker_nccl_synchronized`'s network (its first layer without the bias, whose
    gradient through the normalization is rounding, which Adam's steps make as large as the
    others) on 3 batches, where a run of the step fails
    on rank 1 (a CaptureError; any error of a run is one to the step) at ``stage``:
    "kernels", entering the kernels of a captured step in the first run (the warm-up), before
    any sum; "warm-up", in the last layer's backward pass of the first run (after
    BatchNormalization's two forward sums, before its backward one and the gradient sum);
    "second warm-up", there in the warm-up of a second ``fit``, once a step made its sums;
    "check", there in the eager step the first replay is checked against.  "none" and
    "none twice": one ``fit`` or two, nothing failing."""
    from dnn.backends.gpu import GpuBackend
    from dnn.errors import CaptureError

    nccl = sys.modules["cupy.cuda.nccl"] = FakeNccl()
    backend = GpuBackend()
    model = dnn.Sequential([Dense(16, use_bias=False),
                            dnn.layers.BatchNormalization(synchronized=True),
                            dnn.layers.Activation("relu"), Dense(10, activation="softmax")],
                           seed=0, backend=backend)
    model.compile("adam")
    x, y = data(3 * BATCH)
    if stage in ("second warm-up", "none twice"):
        model.fit(x, y, batch_size=BATCH, verbose=0)

    def injected(*arguments, **options):
        raise CaptureError("injected")
    if distributed.communicator().rank == 1 and stage == "kernels":
        backend.graph_kernels = injected
    elif distributed.communicator().rank == 1 and stage in ("warm-up", "second warm-up",
                                                             "check"):
        last, passes = model.layers[-1], []
        backward = last.backward
        failing_pass = 4 if stage == "check" else 1  # two warm-ups, the capture, the check

        def failing(grad, logits=False):
            passes.append(grad.shape)
            return (injected if len(passes) == failing_pass else backward)(grad, logits=logits)
        last.backward = failing
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, verbose=0)
    rank = distributed.communicator().rank
    np.savez(Path(folder, f"{stage}-{rank}.npz"), *model.get_weights())
    report(folder, stage, sums=nccl.sums, warnings=[str(warning.message) for warning in seen])


@pytest.fixture(scope="module")
def synchronized_eager(tmp_path_factory, standin_path) -> Path:
    """The folder of :func:`worker_synchronized_fails`' runs "none" and "none twice", every
    step eager."""
    from tests.cuda_harness import HostCudaBackend

    if _mpi_missing() or sys.platform != "linux" or not HostCudaBackend.is_available():
        pytest.skip("needs MPI and the stand-in")
    folder = tmp_path_factory.mktemp("synchronized-eager")
    for stage in ("none", "none twice"):
        assert_ran(mpiexec("synchronized-fails", folder, stage, timeout=120, environment={
            "PYTHONPATH": standin_path, "DNN_GPU_GRAPHS": "0"}))
    return folder


@needs_mpi
@pytest.mark.skipif(sys.platform != "linux", reason="stand-in: the stub cuBLAS is built as on "
                                                    "Linux")
@pytest.mark.parametrize("stage, failed, reference", [
    ("kernels", "its warm-up failed: injected", "none"),
    ("second warm-up", "its warm-up failed: injected", "none twice"),
    ("check", "the eager step it is checked against failed: injected", "none")])
def test_a_run_failing_on_one_rank_amid_the_layers_sums_falls_back_on_every_rank(
        tmp_path, standin_path, synchronized_eager, stage, failed, reference):
    """A synchronized BatchNormalization sums three times in a step besides the gradients:
    a run that fails on rank 1 part-way joins the sums it did not make (with zeros, once a
    step made them all; before, by the eager step, where it made none), so that every rank
    falls back to the eager step with one warning, and ends with the same bytes."""
    assert_ran(mpiexec("synchronized-fails", tmp_path, stage, timeout=60,
                       environment={"PYTHONPATH": standin_path}))
    ranks = reports(tmp_path, stage)
    assert ranks[0] == ranks[1]
    assert ranks[0]["warnings"] == [f"the training step runs without a captured graph: "
                                    f"{failed} (on rank 1)"]
    runs = []
    for path in (tmp_path / f"{stage}-0.npz", tmp_path / f"{stage}-1.npz",
                 synchronized_eager / f"{reference}-0.npz"):
        with np.load(path) as archive:
            runs.append([archive[key] for key in archive.files])
    assert len(runs[0]) == 7
    for mine, theirs, alone in zip(*runs):
        assert mine.tobytes() == theirs.tobytes()
        assert np.max(np.abs(mine - alone)) < 1e-5  # an Adam step is 1e-3: none was lost


@needs_mpi
@pytest.mark.skipif(sys.platform != "linux", reason="stand-in: the stub cuBLAS is built as on "
                                                    "Linux")
def test_a_first_run_failing_on_one_rank_after_some_sums_ends_the_job_with_one_error(
        tmp_path, standin_path):
    """Before any step made its sums, those a run that failed part-way did not make are not
    known: the job ends, with the reason, instead of waiting for ever."""
    started = time.monotonic()
    result = mpiexec("synchronized-fails", tmp_path, "warm-up", timeout=30,
                     environment={"PYTHONPATH": standin_path})
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("DnnError: rank 1 cannot complete the other ranks' sums: its training step failed "
            "after 2 of them (its warm-up failed: injected), before a step had made them "
            "all") in result.stderr


@pytest.fixture(scope="module")
def standin_path(tmp_path_factory) -> str:
    """PYTHONPATH for a worker on the CuPy stand-in with a stub cuBLAS 13."""
    from tests.standin import stub_cublas
    from tests.test_gpu_standin import STANDIN, WHEEL_13, fake_pathfinder

    folder = tmp_path_factory.mktemp("standin")
    site = folder / "site"
    stub_cublas.build(site, 13)
    pathfinder = fake_pathfinder(folder / "pathfinder", names=site / WHEEL_13)
    return os.pathsep.join(map(str, [STANDIN, pathfinder, site, ROOT]))


def nccl_run(folder: Path, path: str, fail_warm_up_on="none", graphs="1",
             versions="22304", cold_on="none") -> tuple:
    """``(weights, report)`` of :func:`worker_nccl`, the same on both ranks."""
    result = mpiexec("nccl", folder, fail_warm_up_on, versions, cold_on, timeout=120,
                     environment={"PYTHONPATH": path, "DNN_GPU_GRAPHS": graphs})
    assert_ran(result)
    weights = [weights_of(folder, "nccl", rank) for rank in (0, 1)]
    for mine, theirs in zip(*weights):
        assert mine.tobytes() == theirs.tobytes()
    ranks = reports(folder, "nccl")
    assert ranks[0] == ranks[1]
    return weights[0], ranks[0]


@needs_mpi
@pytest.mark.skipif(sys.platform != "linux", reason="stand-in: the stub cuBLAS is built as on "
                                                    "Linux")
def test_nccl_sums_inside_the_captured_step_as_the_eager_step_does(tmp_path, standin_path):
    from tests.cuda_harness import HostCudaBackend

    if not HostCudaBackend.is_available():
        pytest.skip(f"stand-in: {HostCudaBackend.is_available().reason}")
    captured, run = nccl_run(tmp_path, standin_path)
    # 2 epochs of 5 full batches and a last one (9 rows: 5 + 4): the full ones captured after
    # two warm-ups and replayed (the first two replays checked against an eager step), the
    # sums run once in each replay
    assert run == {"launches": 8, "sums": 14, "warnings": []}
    eager, run = nccl_run(tmp_path, standin_path, graphs="0")
    assert run == {"launches": 0, "sums": 12, "warnings": []}
    for mine, reference in zip(captured, eager):  # products by cuBLAS, or by CuPy's matmul
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-6)
    fallen_back, run = nccl_run(tmp_path, standin_path, fail_warm_up_on="1")
    # the warm-up's sum, with rank 1's zeros, thrown away: one sum more than the eager run
    assert run == {"launches": 0, "sums": 13, "warnings": [
        "the training step runs without a captured graph: its warm-up failed: injected (on "
        "rank 1)"]}
    for mine, reference in zip(fallen_back, eager):
        assert mine.tobytes() == reference.tobytes()
    # rank 1's capture memory still growing in its second warm-up: both ranks warm up a third
    # time before capturing together (a rank capturing alone would leave the other's sum
    # waiting)
    warmed_longer, run = nccl_run(tmp_path, standin_path, cold_on="1")
    assert run == {"launches": 7, "sums": 14, "warnings": []}
    for mine, reference in zip(warmed_longer, eager):
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-6)


@needs_mpi
@pytest.mark.skipif(sys.platform != "linux", reason="stand-in: the stub cuBLAS is built as on "
                                                    "Linux")
@pytest.mark.parametrize("versions, captured", [("20900", True), ("22304,20800", False)],
                         ids=["NCCL 2.9 on every rank", "NCCL 2.8 on rank 1"])
def test_nccl_from_2_9_sums_in_the_captured_step_and_an_older_one_makes_every_rank_eager(
        tmp_path, standin_path, versions, captured):
    """NCCL before 2.9 cannot run inside a CUDA graph (the stand-in's raises there, as a
    capture would fail): a rank that has one sends every rank to the eager step, from the
    first, with no warning (nothing failed); 2.9 captures as later ones do."""
    from tests.cuda_harness import HostCudaBackend

    if not HostCudaBackend.is_available():
        pytest.skip(f"stand-in: {HostCudaBackend.is_available().reason}")
    _, run = nccl_run(tmp_path, standin_path, versions=versions)
    if captured:  # as test_nccl_sums_inside_the_captured_step_as_the_eager_step_does
        assert run == {"launches": 8, "sums": 14, "warnings": []}
    else:  # the 12 steps eager, each summing once by NCCL
        assert run == {"launches": 0, "sums": 12, "warnings": []}


def worker_mpi_gpu(folder: str, nccl_on: str) -> None:
    """:func:`worker_nccl`'s network and data on the stand-in's gpu backend where NCCL is
    unavailable (``cupy.cuda.nccl`` imports, as CuPy's does without the library, with
    ``available`` False) on every rank but ``nccl_on`` (which has :class:`FakeNccl`; "none":
    no rank): the gradients are summed over MPI, through the host.  Its weights and what it
    did are saved for each rank, or as ``plain`` in a single process."""
    import cupy

    from dnn.backends.gpu import GpuBackend

    ranks = distributed.communicator()
    if str(ranks.rank) == nccl_on and ranks.size > 1:
        sys.modules["cupy.cuda.nccl"] = FakeNccl()
    else:
        missing = sys.modules["cupy.cuda.nccl"] = types.ModuleType("cupy.cuda.nccl")
        missing.available = False
    model = dnn.Sequential([Dense(32, activation="relu"), Dense(10, activation="softmax")],
                           seed=0, backend=GpuBackend())
    model.compile("adam", metrics=["accuracy"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*data(5 * BATCH + 9), batch_size=BATCH, epochs=2, verbose=0)
    name = ranks.rank if ranks.size > 1 else "plain"
    np.savez(Path(folder, f"mpi-gpu-{name}.npz"), *model.get_weights())
    Path(folder, f"mpi-gpu-{name}.json").write_text(json.dumps({
        "communicator": type(model.communicator).__name__,
        "in_graph": model.communicator.in_graph, "launches": cupy.cuda.graph.launches,
        "sums": model.gradient_sum().count if ranks.size > 1 else 0,
        "warnings": [str(warning.message) for warning in caught]}))


@needs_mpi
@pytest.mark.skipif(sys.platform != "linux", reason="stand-in: the stub cuBLAS is built as on "
                                                    "Linux")
def test_mpi_sums_gpu_gradients_through_the_host_with_every_step_eager_without_nccl(
        tmp_path, standin_path):
    """GPUs without NCCL, on the stand-in: the MPI communicator sums each step's gradients
    through the host, which no captured graph can hold, so no step is captured (no warm-up,
    capture or replay, and no warning: nothing failed); every rank ends with the same bytes,
    within 1e-6 of one process, whose steps are captured and replayed."""
    from tests.cuda_harness import HostCudaBackend

    if not HostCudaBackend.is_available():
        pytest.skip(f"stand-in: {HostCudaBackend.is_available().reason}")
    environment = {"PYTHONPATH": standin_path, "DNN_GPU_GRAPHS": "1"}
    assert_ran(subprocess.run(
        [sys.executable, __file__, "mpi-gpu", tmp_path, "none"], capture_output=True,
        text=True, timeout=120, cwd=ROOT,
        env={**{key: value for key, value in os.environ.items()
                if key not in launcher.SIZE_VARIABLES}, "OMP_NUM_THREADS": "1", **environment}))
    alone = weights_of(tmp_path, "mpi-gpu", "plain")
    # 2 epochs of 5 full batches (captured after two warm-ups, replayed) and a last of 9 rows
    assert json.loads((tmp_path / "mpi-gpu-plain.json").read_text()) == {
        "communicator": "SingleProcess", "in_graph": True, "launches": 8, "sums": 0,
        "warnings": []}
    for nccl_on in ("none", "0"):  # NCCL on no rank, or on rank 0 alone: MPI on both
        assert_ran(mpiexec("mpi-gpu", tmp_path, nccl_on, timeout=120, environment=environment))
        ranks = [weights_of(tmp_path, "mpi-gpu", rank) for rank in (0, 1)]
        runs = [json.loads((tmp_path / f"mpi-gpu-{rank}.json").read_text()) for rank in (0, 1)]
        # the 12 steps eager, each summing once over MPI
        assert runs[0] == runs[1] == {"communicator": "MpiCommunicator", "in_graph": False,
                                      "launches": 0, "sums": 12, "warnings": []}, nccl_on
        for mine, theirs, reference in zip(*ranks, alone):
            assert mine.tobytes() == theirs.tobytes()
            assert np.max(np.abs(mine - reference)) < 1e-6


@needs_mpi
@pytest.mark.gpu
def test_nccl_on_gpus():
    """The NCCL all-reduce on real GPUs, one per rank: it needs two."""
    from dnn.backends.gpu import GpuBackend

    if not GpuBackend.is_available():
        pytest.skip(f"NCCL needs CUDA GPUs: {GpuBackend.is_available().reason}")
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    if count < 2:
        pytest.skip(f"NCCL needs one GPU per rank, two at least; this machine has {count}")
    assert_ran(mpiexec("nccl-gpus", timeout=300))


def worker_nccl_gpus() -> None:
    """Two ranks, one GPU each, NCCL in the captured step: the same weights on both."""
    rank = distributed.communicator().rank
    distributed.use_local_gpu()
    model = seed_network("rmsprop", backend="gpu")
    model.fit(*data(20 * BATCH), batch_size=BATCH, epochs=2, verbose=0)
    digest = np.concatenate([w.reshape(-1) for w in model.get_weights()]).tobytes()
    digests = distributed.communicator().gather_objects(digest)
    assert digests[0] == digests[1], f"rank {rank}: the ranks' weights differ"


def dropout_network() -> dnn.Sequential:
    """784 -> 64 relu -> Dropout 0.5 -> 10 softmax, built, compiled."""
    model = dnn.Sequential([Dense(64, activation="relu"), dnn.layers.Dropout(0.5),
                            Dense(10, activation="softmax")], seed=0)
    model.build(784)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def worker_dropout(folder: str) -> None:
    """The Dropout network trained on 8 batches and an uneven last one, its weights saved
    (per rank, or ``plain`` in one process)."""
    ranks = distributed.communicator()
    model = dropout_network()
    model.fit(*data(8 * BATCH + 77), batch_size=BATCH, epochs=2, verbose=0)
    np.savez(Path(folder, f"dropout-{ranks.rank if ranks.size > 1 else 'plain'}.npz"),
             *model.get_weights())


@needs_mpi
def test_two_ranks_drop_the_units_one_process_drops():
    """Dropout's masks follow each row's place in the global batch: 2 ranks train as one
    process does (to the rounding of the gradient sum), not as two draws of their own."""
    with tempfile.TemporaryDirectory() as folder:
        assert_ran(mpiexec("dropout", folder))
        assert_ran(subprocess.run([sys.executable, __file__, "dropout", folder], timeout=120,
                                  capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}))
        weights = {name: weights_of(Path(folder), "dropout", name) for name in (0, 1, "plain")}
    for mine, theirs, alone in zip(weights[0], weights[1], weights["plain"]):
        assert mine.tobytes() == theirs.tobytes()
        assert np.max(np.abs(mine - alone)) < 1e-6


def worker_batch_norm(folder: str) -> None:
    """A network with BatchNormalization trained for 2 epochs with validation on 2 ranks;
    each rank's moving statistics after each epoch's training and its figures saved."""
    ranks = distributed.communicator()
    model = dnn.Sequential([Dense(32), dnn.layers.BatchNormalization(),
                            dnn.layers.Activation("relu"), Dense(10, activation="softmax")],
                           seed=0)
    model.build(784)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    seen = []
    record = dnn.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(
        [weight.copy() for weight in model.layers[1].state_weights]))
    history = model.fit(*data(6 * BATCH), batch_size=BATCH, epochs=2, validation_split=0.25,
                        verbose=0, callbacks=[record])
    np.savez(Path(folder, f"batch-norm-{ranks.rank}.npz"),
             *[weight for epoch in seen for weight in epoch])
    report(folder, "batch-norm", history=history.history,
           evaluated=model.evaluate(*data(300), verbose=0))


def worker_synchronized(folder: str) -> None:
    """A convnet with a synchronized BatchNormalization trained in float64 on 8 batches and
    an uneven last one, for 2 epochs; its weights saved (per rank, or ``plain`` in one
    process)."""
    ranks = distributed.communicator()
    model = dnn.Sequential([dnn.layers.Reshape((28, 28, 1)), dnn.layers.Conv2D(4, 3, strides=2),
                            dnn.layers.BatchNormalization(synchronized=True),
                            dnn.layers.Activation("relu"), dnn.layers.Flatten(),
                            Dense(10, activation="softmax")], seed=0, dtype="float64")
    model.build(784)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(*data(8 * BATCH + 77), batch_size=BATCH, epochs=2, verbose=0)
    np.savez(Path(folder, f"synchronized-{ranks.rank if ranks.size > 1 else 'plain'}.npz"),
             *model.get_weights())


@needs_mpi
def test_a_synchronized_batch_normalization_trains_on_two_ranks_as_on_one(tmp_path):
    """synchronized=True: the global batch's statistics on every rank, and the gradient
    through them, so 2 ranks end as one process does, to the rounding of the sums (measured:
    2e-11 in float64; 2e-3 with each share's own statistics), moving statistics included."""
    assert_ran(mpiexec("synchronized", tmp_path))
    assert_ran(subprocess.run([sys.executable, __file__, "synchronized", tmp_path],
                              timeout=120, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}))
    runs = {}
    for name in (0, 1, "plain"):
        with np.load(tmp_path / f"synchronized-{name}.npz") as archive:
            runs[name] = [archive[key] for key in archive.files]
    assert len(runs["plain"]) == 8
    for mine, theirs, alone in zip(runs[0], runs[1], runs["plain"]):
        assert mine.tobytes() == theirs.tobytes()
        assert np.max(np.abs(mine - alone)) < 1e-9, np.max(np.abs(mine - alone))


@needs_mpi
def test_the_ranks_moving_statistics_are_averaged_at_each_epochs_end(tmp_path):
    """Each rank moves BatchNormalization's statistics with its own shares; at an epoch's
    end they are their mean over the ranks, the same bytes on every rank, so validation
    and evaluation agree and the saved model is every rank's."""
    assert_ran(mpiexec("batch-norm", tmp_path))
    with np.load(tmp_path / "batch-norm-0.npz") as first, \
            np.load(tmp_path / "batch-norm-1.npz") as second:
        assert len(first.files) == 4  # moving mean and variance after 2 epochs
        for name in first.files:
            assert first[name].tobytes() == second[name].tobytes()
        assert not np.array_equal(first["arr_0"], first["arr_2"])  # they moved
    ranks = reports(tmp_path, "batch-norm")
    assert ranks[0] == ranks[1]


def weights_digest(model: dnn.Sequential) -> str:
    """A hex digest of every weight's bytes."""
    import hashlib

    return hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()


def seedless_network() -> dnn.Sequential:
    """784 -> 16 relu -> Dropout 0.5 -> 10 softmax, without a seed: each rank draws its own
    weights and Dropout seed (built by its first data)."""
    model = dnn.Sequential([Dense(16, activation="relu"), dnn.layers.Dropout(0.5),
                            Dense(10, activation="softmax")])
    model.compile("adam")
    return model


def worker_seedless(folder: str) -> None:
    """Models without a seed: each one's first train_on_batch, test_on_batch, evaluate or fit
    starts from rank 0's state; what each rank has after it."""
    x, y = data(6)
    runs = {}
    for call in ("train_on_batch", "test_on_batch", "evaluate", "fit"):
        model = seedless_network()
        if call == "fit":
            model.fit(x, y, batch_size=4, verbose=0)
        elif call == "evaluate":
            model.evaluate(x, y, verbose=0)
        else:
            getattr(model, call)(x, y)
        runs[call] = {"weights": weights_digest(model),
                      "dropout seed": int(model.layers[1]._seed)}
    report(folder, "seedless", **runs)


@needs_mpi
def test_the_first_call_on_a_batch_or_evaluate_starts_from_rank_0s_state(tmp_path):
    """Without a seed, each rank draws its own weights and Dropout seed: train_on_batch,
    test_on_batch and evaluate start from rank 0's, as fit does (else the ranks train and
    evaluate models of their own), Dropout's seed included."""
    assert_ran(mpiexec("seedless", tmp_path))
    ranks = reports(tmp_path, "seedless")
    assert ranks[0] == ranks[1]
    assert len({run["weights"] for run in ranks[0].values()}) == 4  # each model its own


def worker_empty_share(folder: str) -> None:
    """BatchNormalization (each share its own statistics) trained on 5 rows in batches of 4:
    the last batch's one row leaves rank 1 none; its moving statistics, warnings and
    evaluate's loss."""
    x, y = data(5)
    model = dnn.Sequential([Dense(8), dnn.layers.BatchNormalization(),
                            Dense(10, activation="softmax")], seed=0)
    model.compile("sgd")
    history, fit_warnings = caught(lambda: model.fit(x, y, batch_size=4, epochs=2, verbose=0))
    report(folder, "empty-share", moving=[w.tolist() for w in model.layers[1].state_weights],
           loss=history.history["loss"], warnings=fit_warnings,
           evaluated=model.evaluate(x, y, verbose=0))


@needs_mpi
def test_a_rank_without_rows_leaves_its_moving_statistics_alone(tmp_path):
    """A share of no rows has no mean (NaN, which the epoch's average would give every
    rank): that rank's BatchNormalization leaves its moving statistics as they are."""
    assert_ran(mpiexec("empty-share", tmp_path))
    ranks = reports(tmp_path, "empty-share")
    assert ranks[0] == ranks[1] and ranks[0]["warnings"] == []
    assert np.isfinite(ranks[0]["moving"]).all() and np.isfinite(ranks[0]["evaluated"])
    assert np.isfinite(ranks[0]["loss"]).all()


def worker_stop_at_epoch_end(folder: str) -> None:
    """A callback that stops training at an epoch's end on rank 0 alone."""
    rank = distributed.communicator().rank
    model = seed_network("sgd")
    model.fit(*data(64), batch_size=16, epochs=3, verbose=0,
              callbacks=[dnn.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(
                  model, "stop_training", rank == 0))])
    report(folder, "stop", epochs=model.epochs_done,
           iterations=int(model.optimizer.iterations))


@needs_mpi
def test_a_stop_at_an_epochs_end_on_one_rank_stops_every_rank(tmp_path):
    assert_ran(mpiexec("stop-at-epoch-end", tmp_path, timeout=30))
    assert reports(tmp_path, "stop") == [{"epochs": 1, "iterations": 4}] * 2


def worker_settings_drift(folder: str, how: str) -> None:
    """A callback that changes the learning rate: "one rank", on rank 1 alone in the third
    batch (as one deciding from a batch's logs, each rank's own, would); "every rank", a
    LearningRateScheduler and ReduceLROnPlateau, alike on every rank."""
    rank = distributed.communicator().rank
    model = seed_network("sgd")

    def change(batch, logs):
        if rank == 1 and batch == 2:
            model.optimizer.learning_rate = 0.5
    callbacks = ([dnn.callbacks.LambdaCallback(on_train_batch_end=change)] if how == "one rank"
                 else [dnn.callbacks.LearningRateScheduler(lambda epoch, rate: rate * 0.5),
                       dnn.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                                       min_delta=10.0)])
    model.fit(*data(1000), batch_size=BATCH, epochs=3, verbose=0, callbacks=callbacks)
    np.savez(Path(folder, f"drift-{rank}.npz"), *model.get_weights())
    report(folder, "drift", learning_rate=float(model.optimizer.learning_rate))


@needs_mpi
def test_an_optimizer_setting_changed_on_one_rank_ends_the_job_at_the_epochs_end(tmp_path):
    """One line, rank 0's, and status 2 (a usage error, as settings that differ at the start),
    within 30 seconds; not ranks whose weights drift apart silently."""
    started = time.monotonic()
    result = mpiexec("settings-drift", tmp_path, "one rank", timeout=30)
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "UsageError:" in line]
    assert errors == ["dnn.errors.UsageError: rank 1 has the optimizer's learning_rate 0.5, "
                      "rank 0 0.05: a callback that changes training must run alike on every "
                      "rank (docs/distributed.md)"], result.stderr
    assert not list(tmp_path.glob("drift-*"))


@needs_mpi
def test_an_optimizer_setting_changed_alike_on_every_rank_trains_on(tmp_path):
    assert_ran(mpiexec("settings-drift", tmp_path, "every rank", timeout=60))
    ranks = reports(tmp_path, "drift")
    # halved by the scheduler at each of the 3 epochs' start, by ReduceLROnPlateau at the
    # 2nd and 3rd epochs' end (the first improves on none)
    assert ranks[0] == ranks[1] == {"learning_rate": pytest.approx(0.05 / 2 ** 5, rel=1e-6)}
    for mine, theirs in zip(weights_of(tmp_path, "drift", 0), weights_of(tmp_path, "drift", 1)):
        assert np.array_equal(mine, theirs)


def worker_exits(code: str, folder: str) -> None:
    """Rank 1 calls ``sys.exit`` in a callback in its third batch (``code`` "none": without
    an argument; a number: with it; else with that message), under plain ``python``; rank 0
    goes on into the next gradient sum.  Rank 1 notes in ``folder`` that its callbacks' train
    end and the script's ``finally`` ran."""
    rank = distributed.communicator().rank
    argument = () if code == "none" else (int(code),) if code.isdigit() else (code,)

    def leave(batch, logs):
        if rank == 1 and batch == 2:
            sys.exit(*argument)

    def note(what):
        Path(folder, f"{what}-{rank}").touch()
    callback = dnn.callbacks.LambdaCallback(on_train_batch_end=leave,
                                            on_train_end=lambda logs: note("train-end"))
    try:
        seed_network("sgd").fit(*data(2000), batch_size=BATCH, epochs=100, verbose=0,
                                callbacks=[callback])
    finally:
        note("finally")


@needs_mpi
@pytest.mark.parametrize("code, status", [("none", 0), ("0", 0), ("3", 3),
                                          ("leaving early", 1)])
def test_sys_exit_on_one_rank_inside_fit_ends_the_job_with_its_status(code, status,
                                                                     tmp_path):
    """Python calls no hook for SystemExit, and a plain ``python`` has no runner to abort the
    job: ``fit`` has it end as the process exits (MPI_Abort, whose status 0 MPICH's mpiexec
    returns as 0), after the exit went on as in one process (on_train_end, ``finally``)."""
    started = time.monotonic()
    result = mpiexec("exits", code, tmp_path, timeout=30)
    assert time.monotonic() - started < 30
    assert result.returncode == status, result.stdout + result.stderr
    if status == 1:
        assert "rank 1: leaving early" in result.stderr.splitlines()
    assert (tmp_path / "train-end-1").exists() and (tmp_path / "finally-1").exists()


def test_sys_exit_inside_fit_in_one_process_is_left_to_python():
    model = seed_network("sgd")
    leave = dnn.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: sys.exit(4))
    with pytest.raises(SystemExit) as raised:
        model.fit(*data(256), batch_size=BATCH, verbose=0, callbacks=[leave])
    assert raised.value.code == 4


WORKERS = {"equivalence": worker_equivalence, "references": worker_references,
           "graph": worker_graph,
           "dropout": worker_dropout, "batch-norm": worker_batch_norm,
           "synchronized": worker_synchronized, "nccl-synchronized": worker_nccl_synchronized,
           "nccl-setting": worker_nccl_setting,
           "callbacks": worker_callbacks, "resume": worker_resume,
           "resume-perturbed": worker_resume_perturbed, "stream": worker_stream,
           "sources": worker_sources, "unequal-rows": worker_unequal_rows,
           "mismatch": worker_mismatch, "fails": worker_fails, "nccl": worker_nccl,
           "ends": worker_ends, "blas-threads": worker_blas_threads,
           "mpi-gpu": worker_mpi_gpu, "nccl-gpus": worker_nccl_gpus,
           "seedless": worker_seedless, "empty-share": worker_empty_share,
           "stop-at-epoch-end": worker_stop_at_epoch_end,
           "synchronized-fails": worker_synchronized_fails,
           "settings-drift": worker_settings_drift, "exits": worker_exits}

if __name__ == "__main__":
    WORKERS[sys.argv[1]](*sys.argv[2:])
