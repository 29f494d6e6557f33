#!/usr/bin/env python
"""Hostile files, flags, plugins and signals against the ``dnn`` command line, each case in a
fresh process: no traceback, one ``Error:`` line where it refuses, peak memory (the process's
maximum resident set) under 1 GiB, and no file the user protected or did not name replaced or
left behind.

    python scripts/hostile.py --data-dir ../shared/data/mnist [--cases REGEX] [--json out.json]
    python scripts/hostile.py --quick   # a handful of representative cases, for CI

Each case's line names its exit status and its peak RSS.  Exits non-zero when any case breaks
a rule.  It makes its files (gzip bombs, sparse 4 GiB files, damaged checkpoints, fake
plugins, named pipes) in a temporary folder and deletes them after.  ``--quick`` needs no
MNIST: it runs only the cases marked quick, none of which reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MEMORY_LIMIT = 1 << 30
TIMEOUT_SECONDS = 120  # a case still running after this hangs: it is killed and reported
MNIST = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass
class Case:
    """A command, the exit status it must end with, and files that must stay as they are."""

    name: str
    args: list
    status: int  # 0: it must succeed; else the exit status of its one error line
    protected: list = field(default_factory=list)  # paths whose bytes and mode must not change
    message: str = ""  # a part of its error line
    signal_after: float | None = None  # send signal_number after this many seconds
    allowed_new: tuple = ()  # names of files it may create in the work folder
    removed: list = field(default_factory=list)  # paths it must delete (stale temporaries)
    signal_number: int = signal.SIGTERM
    env: dict = field(default_factory=dict)  # environment variables of its own
    quick: bool = False  # one of the handful that --quick runs


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def zipped(path: Path, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    """A zip of ``members`` ({name: bytes, or (size, chunk) streamed})."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            if isinstance(data, tuple):
                with archive.open(name, "w", force_zip64=True) as member:
                    for _ in range(data[0] // len(data[1])):
                        member.write(data[1])
            else:
                archive.writestr(name, data)
    return path


def patched(path: Path, signatures: dict) -> Path:
    """``path`` with, in every local and central zip header, ``{(signature, offset): set}``
    applied: a function of the old 2 bytes returning the new ones."""
    data = bytearray(path.read_bytes())
    for (signature, offset), change in signatures.items():
        start = 0
        while (start := data.find(signature, start)) != -1:
            data[start + offset:start + offset + 2] = change(bytes(data[start + offset:
                                                                          start + offset + 2]))
            start += 4
    path.write_bytes(bytes(data))
    return path


def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    """The ``.npy`` header of an array of ``shape`` and ``descr``, without its data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue()


# (signature, offset of the compressed size, offset of the name) of both kinds of zip header;
# the size it inflates to follows the compressed size
ZIP_HEADERS = ((b"PK\x03\x04", 18, 30), (b"PK\x01\x02", 20, 46))


def resized(path: Path, member: str, size: int, compressed: int | None = None,
            headers=ZIP_HEADERS) -> Path:
    """``path`` with the ``headers`` of ``member`` (its local header and zip directory entry,
    or one of them) claiming that it inflates to ``size`` bytes from ``compressed``
    (unchanged where None)."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, at, name_at in headers:
        start = 0
        while (start := data.find(signature, start)) != -1:
            if data[start + name_at:start + name_at + len(name)] == name:
                old = struct.unpack_from("<I", data, start + at)[0]
                struct.pack_into("<II", data, start + at,
                                 old if compressed is None else compressed, size)
            start += 4
    path.write_bytes(bytes(data))
    return path


def hollow(source: Path, target: Path, claims: dict, change=None,
           compression=zipfile.ZIP_STORED) -> Path:
    """A copy of checkpoint ``source`` (after ``change(meta, arrays)``) in which each member of
    ``claims`` ({name: shape}) is the ``.npy`` header of a float32 array of that shape and a
    little data, its zip headers claiming the whole array: a file that says it holds far more
    than it does.  Stored, a member holds 64 bytes; deflated, random bytes 1/80 of its claim,
    so that its claim inflates no more than a real array might."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if change is not None:
        meta = json.loads(str(arrays["meta"]))
        change(meta, arrays)
        arrays["meta"] = np.asarray(json.dumps(meta))
    rng = np.random.default_rng(0)
    sizes, members = {}, {}
    for name, array in arrays.items():
        if name not in claims:
            members[f"{name}.npy"] = npy(array)
            continue
        header = npy_header(claims[name])
        sizes[f"{name}.npy"] = len(header) + 4 * int(np.prod(claims[name], dtype=object))
        data = (bytes(64) if compression == zipfile.ZIP_STORED
                else rng.bytes(max(64, sizes[f"{name}.npy"] // 80)))
        members[f"{name}.npy"] = header + data
    zipped(target, members, compression)
    for member, size in sizes.items():
        resized(target, member, size, size if compression == zipfile.ZIP_STORED else None)
    return target


def overlapping(path: Path) -> Path:
    """A checkpoint-like zip whose second member's directory entry points at the first
    member's local header (two names, one set of bytes: the zip bomb of overlapping files)."""
    meta = npy(np.asarray(json.dumps({"format": "dnn-checkpoint", "version": 1})))
    zipped(path, {"meta.npy": meta, "weight_0.npy": npy(np.zeros((4, 4), np.float32))})
    data = bytearray(path.read_bytes())
    second = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 4)
    struct.pack_into("<I", data, second + 42, 0)  # its local header's offset: the first's
    path.write_bytes(bytes(data))
    return path


def float_idx_with_nan(path: Path) -> None:
    """MNIST's training images as a gzip of float32 IDX (type 0x0D), one of them NaN."""
    images = np.zeros((60000, 28, 28), ">f4")
    images[0, 0, 0] = np.nan
    with gzip.open(path, "wb", compresslevel=1) as file:
        file.write(bytes([0, 0, 0x0D, 3]) + np.asarray(images.shape, ">u4").tobytes())
        file.write(images.tobytes())


def mnist_copy(source: Path, folder: Path, replace: dict) -> Path:
    """A folder of MNIST's four files (links to ``source``'s) with ``replace`` ({name: a
    function writing a hostile file at the path it gets}) in place of some."""
    folder.mkdir()
    for name in MNIST:
        if name in replace:
            replace[name](folder / name)
        else:
            (folder / name).symlink_to((source / name).resolve())
    return folder


def gzip_bomb(path: Path) -> None:
    """A valid MNIST images header, its data, then 1 GiB of zeros: ~1 MB of gzip."""
    header = bytes([0, 0, 8, 3]) + np.asarray((60000, 28, 28), ">u4").tobytes()
    with gzip.open(path, "wb", compresslevel=1) as file:
        file.write(header + bytes(60000 * 784))
        for _ in range(1024):
            file.write(bytes(1 << 20))


def sparse_raw(path: Path) -> None:
    """A raw IDX of the right header and 4 GiB of (sparse) zeros."""
    with open(path.with_name(path.name.removesuffix(".gz")), "wb") as file:
        file.write(bytes([0, 0, 8, 3]) + np.asarray((60000, 28, 28), ">u4").tobytes())
        file.truncate(4 << 30)


FAKE_PLUGINS = {  # module: source
    "hostile_tiny": """
        import numpy as np

        class Tiny:
            name = "tiny"

            def load(self, data_dir=None):
                rng = np.random.default_rng(0)
                def split(n):
                    return rng.random((n, 12), dtype=np.float32), rng.integers(0, 3, size=n)
                return split(3000), split(100)
    """,
    "hostile_quits": "import sys\nsys.exit(3)\n",
    "hostile_chatty": "print('hello from a plugin')\nfrom dnn.optimizers import SGD as Chatty\n",
    "hostile_stops": """
        from dnn.optimizers import Optimizer

        class Stops(Optimizer):
            def update(self, param, grad, state):
                raise SystemExit(4)
    """,
    "hostile_nans": """
        import numpy as np

        class Nans:
            name = "nans"

            def load(self, data_dir=None):
                x = np.full((30, 12), 0.5, np.float32)
                x[3, 4] = np.nan
                return (x, np.arange(30) % 3), (x.copy(), np.arange(30) % 3)
    """,
}
ENTRY_POINTS = {"dnn.datasets": {"tiny": "hostile_tiny:Tiny", "nans": "hostile_nans:Nans"},
                "dnn.optimizers": {"quits": "hostile_quits:Nope",
                                   "chatty": "hostile_chatty:Chatty",
                                   "stops": "hostile_stops:Stops"}}


def fake_site(folder: Path) -> Path:
    """A folder of plugin modules and a dist-info registering them, for PYTHONPATH."""
    folder.mkdir()
    info = folder / "dnn_hostile_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dnn-hostile-plugins\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
        for group, entries in ENTRY_POINTS.items()))
    for module, source in FAKE_PLUGINS.items():
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
    return folder


def trained_checkpoint(path: Path, site: Path) -> Path:
    """A real checkpoint of a small network trained for one epoch on the fake dataset."""
    run([sys.executable, "-m", "dnn", "train", "--dataset", "tiny", "--hidden", "16",
         "--epochs", "1", "--quiet", "--save", str(path)], site, check=True)
    return path


def rewritten(source: Path, target: Path, change) -> Path:
    """A copy of checkpoint ``source`` after ``change(meta, arrays)``."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    change(meta, arrays)
    np.savez(target, meta=np.asarray(json.dumps(meta)), **arrays)
    return target


# Runs argv[2:] and writes its peak RSS (KiB) to file descriptor argv[1], passing on the
# signals it gets and ending as the command ended.  The measured process must be started by a
# small process: Linux counts into a child's ru_maxrss the resident set of the process it was
# forked from, so that a command started from a big test process would show that process's
# peak, not its own.
MEASURED = """
import os, signal, subprocess, sys
command = subprocess.Popen(sys.argv[2:])
for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(number, lambda number, frame: command.send_signal(number))
_, status, usage = os.wait4(command.pid, 0)
os.write(int(sys.argv[1]), str(usage.ru_maxrss).encode())
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def _as_in_a_terminal() -> None:
    """SIGHUP at its default, as a terminal's processes have it, even when this script runs
    under nohup (whose ignored SIGHUP every child would inherit)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def run(command, site: Path, check=False, signal_after=None, cwd=None,
        signal_number=signal.SIGTERM, env=None):
    """``(status, output, peak RSS in bytes)`` of ``command`` in a fresh process, with
    ``env`` added to its environment, ``signal_number`` sent to it after ``signal_after``
    seconds; one still running after TIMEOUT_SECONDS is killed (status -9)."""
    environment = {name: value for name, value in os.environ.items() if name != "DNN_DATA_DIR"}
    environment.update(PYTHONPATH=str(site), DNN_CACHE_DIR=str(site / "cache"), **(env or {}))
    reading, writing = os.pipe()
    process = subprocess.Popen([sys.executable, "-I", "-S", "-c", MEASURED, str(writing),
                                *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=environment, cwd=cwd, pass_fds=(writing,),
                               start_new_session=True, preexec_fn=_as_in_a_terminal)
    os.close(writing)
    watchdog = threading.Timer(TIMEOUT_SECONDS, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    if signal_after is not None:
        time.sleep(signal_after)
        process.send_signal(signal_number)
    output = process.stdout.read().decode(errors="replace")
    status = process.wait()
    watchdog.cancel()
    with contextlib.suppress(ProcessLookupError):  # what the command left running, if any
        os.killpg(process.pid, signal.SIGKILL)
    with os.fdopen(reading) as report:
        peak = int(report.read() or 0) * 1024
    if check and status != 0:
        raise SystemExit(f"{command} failed: {output}")
    return status, output, peak


def console_script() -> list:
    """The ``dnn`` console script beside this Python (the path a user's Ctrl-C takes), or
    ``python -m dnn`` where there is none."""
    script = Path(sys.executable).with_name("dnn")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dnn"]


DNN = [sys.executable, "-m", "dnn"]
TRAIN = [*DNN, "train", "--dataset", "tiny", "--hidden", "16", "--epochs", "1"]
META = npy(np.asarray(json.dumps({"format": "dnn-checkpoint", "version": 1})))


def evaluate(path: Path) -> list:
    return [*DNN, "evaluate", str(path), "--dataset", "tiny"]


def with_method(method: int):
    """A maker of a checkpoint-like zip whose every header names compression ``method``."""
    return lambda path: patched(zipped(path, {"meta.npy": META}), {
        (b"PK\x03\x04", 8): lambda old: method.to_bytes(2, "little"),
        (b"PK\x01\x02", 10): lambda old: method.to_bytes(2, "little")})


def checkpoint_cases(work: Path, model: Path) -> list[Case]:
    """Damaged and hostile checkpoints given to ``dnn evaluate``."""
    checkpoints = {
        "an unused 3 GiB member": lambda path: zipped(
            path, {"meta.npy": META, "extra.npy": (3 << 30, bytes(1 << 20))},
            zipfile.ZIP_DEFLATED),
        "a 3 GiB weight of zeros": lambda path: zipped(
            path, {"meta.npy": META, "weight_0.npy": (3 << 30, bytes(1 << 20))},
            zipfile.ZIP_DEFLATED),
        "units 300000": lambda path: rewritten(
            model, path, lambda m, a: m["model"]["layers"][0].update(units=300000)),
        "a (2e7, 0) weight": lambda path: rewritten(
            model, path, lambda m, a: a.update(weight_0=np.zeros((20000000, 0)))),
        "NaN weights": lambda path: rewritten(
            model, path, lambda m, a: a["weight_0"].__setitem__((0, 0), np.nan)),
        "deeply nested meta": lambda path: zipped(
            path, {"meta.npy": npy(np.asarray("[" * 100000 + "]" * 100000))}),
        "a malformed .npy header": lambda path: zipped(
            path, {"meta.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': '<U3',   \n"}),
        "an .npy with a zip appended": lambda path: zipped(
            path, {"meta.npy": META + zipped(work / "inner.zip", {"x.npy": META}).read_bytes()}),
        "a member without .npy": lambda path: zipped(path, {"meta.npy": META, "meta": b"x"}),
        "the encrypted flag": lambda path: patched(zipped(path, {"meta.npy": META}), {
            (b"PK\x03\x04", 6): lambda old: bytes([old[0] | 1, old[1]]),
            (b"PK\x01\x02", 8): lambda old: bytes([old[0] | 1, old[1]])}),
        "compression method 1": with_method(1),
        "compression method 99": with_method(99),
        "a pickle": lambda path: path.write_bytes(b"\x80\x04K\x01."),
        "text": lambda path: path.write_text("not a model\n"),
    }
    return [Case(f"checkpoint: {name}", evaluate(make(work / f"c{index}.npz")), 1)
            for index, (name, make) in enumerate(checkpoints.items())]


def units_300000(meta: dict, arrays: dict) -> None:
    """A checkpoint's first layer made 300,000 units wide (its weights left as they are)."""
    meta["model"]["layers"][0].update(units=300000)


def lying_checkpoint_cases(work: Path, model: Path) -> list[Case]:
    """Checkpoints whose zip headers claim more than the file holds, given to ``dnn evaluate``
    and to ``dnn train --resume``."""
    claims = {"weight_0": (1000, 300000), "weight_1": (300000,), "weight_2": (300000, 3)}
    weight = hollow(model, work / "claims-1.28GB.npz", {"weight_0": (20000000, 16)})
    wide = hollow(model, work / "claims-300000-units.npz", claims, units_300000)
    deflated = hollow(model, work / "deflated-300000-units.npz",
                      {**claims, "weight_0": (100, 300000)}, units_300000, zipfile.ZIP_DEFLATED)
    return [
        Case("checkpoint: zip headers claiming a 1.28 GB weight", evaluate(weight), 1,
             message="claims 1,280,000,128 bytes of data; the file holds at most", quick=True),
        Case("checkpoint: --resume, zip headers claiming a 1.28 GB weight",
             [*TRAIN, "--resume", str(weight)], 1, message="claims 1,280,000,128 bytes",
             quick=True),
        Case("checkpoint: zip headers claiming the weights of 300,000 units", evaluate(wide), 1,
             message="the file holds at most", quick=True),
        Case("checkpoint: deflated weights of 300,000 units, ending early", evaluate(deflated),
             1, message="weight_0 ends after"),
        Case("checkpoint: a directory entry pointing into another member",
             evaluate(overlapping(work / "overlapping.npz")), 1, message="is damaged: member"),
        Case("checkpoint: an Input layer declaring 20,000,000 inputs",
             evaluate(rewritten(model, work / "declares.npz", lambda meta, arrays: meta[
                 "model"]["layers"].insert(0, {"class": "Input", "shape": [20000000]}))), 1,
             message="weight 0 has shape (12, 16); its architecture"),
        Case("checkpoint: the zip directory alone claiming 1.28 GB",
             evaluate(resized(zipped(work / "directory-lies.npz", {"meta.npy": META}),
                              "meta.npy", 1280000000, 1280000000, ZIP_HEADERS[1:])), 1,
             message="claims 1,280,000,000 bytes of data"),
    ]


def file_cases(work: Path, model: Path) -> list[Case]:
    """Destinations that must be refused, or written without harm."""
    protected = work / "protected.npz"
    protected.write_bytes(model.read_bytes())
    protected.chmod(0o444)
    long_name = "m" * 246 + ".npz"  # a temporary's name is cut to fit NAME_MAX
    stale = work / f".{long_name[:239]}.0123abcd.part"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (time.time() - 3600,) * 2)
    pipe = work / "pipe.out"
    os.mkfifo(pipe)
    (work / "afile").write_text("a user's notes\n")
    save_under_a_file = textwrap.dedent(f"""
        import sys, dnn
        model = dnn.Sequential([dnn.layers.Dense(3)])
        model.build(4)
        try:
            model.save({str(work / "afile" / "x.npz")!r})
        except dnn.errors.DnnError as error:
            sys.exit(f"Error: {{error}}")
    """)
    return [
        Case("files: --save over a write-protected file", [*TRAIN, "--save", str(protected)], 2,
             protected=[protected], message="write-protected"),
        Case("files: --save in new folders with an unknown optimizer",
             [*TRAIN, "--save", str(work / "a" / "b" / "m.npz"), "--optimizer", "nope"], 2,
             message="unknown optimizer 'nope'"),
        Case("files: a 250-byte file name, beside a stale temporary of it",
             [*TRAIN, "--save", str(work / long_name)], 0, allowed_new=(long_name,),
             removed=[stale]),
        *(Case(f"files: {option} to a named pipe", [*TRAIN, option, str(pipe)], 2,
               message="it is a named pipe, not a regular file", quick=option == "--save")
          for option in ("--save", "--history", "--plot")),
        Case("files: --save to /dev/null", [*TRAIN, "--save", os.devnull], 2,
             message="it is a character device"),
        Case("files: Sequential.save under a file", [sys.executable, "-c", save_under_a_file],
             1, protected=[work / "afile"], message="a file stands where its folder should be",
             quick=True),
    ]


def flag_and_plugin_cases() -> list[Case]:
    """Extreme flags, and plugins that exit, print or break their contract."""
    return [
        Case("flags: --hidden 2**63", [*TRAIN, "--hidden", str(2 ** 63)], 2,
             message="Dense units must be"),
        Case("flags: --hidden 2**31-1", [*DNN, "train", "--dataset", "tiny", "--hidden",
                                         str(2 ** 31 - 1)], 1, message="more memory"),
        Case("flags: --lr 0", [*TRAIN, "--lr", "0"], 0, quick=True),
        Case("flags: --lr 1e-45", [*TRAIN, "--lr", "1e-45", "--optimizer", "adam"], 0),
        Case("plugins: sys.exit() at import", [*DNN, "plugins"], 0),
        Case("plugins: sys.exit() in update", [*TRAIN, "--optimizer", "stops"], 1,
             message="SystemExit: 4"),
        Case("plugins: printing at import, --json", [*DNN, "plugins", "--json"], 0),
        Case("plugins: sys.exit() at import, train with it", [*TRAIN, "--optimizer", "quits"], 1,
             message="SystemExit: 3"),
    ]


def data_cases(work: Path) -> list[Case]:
    """Data folders that are not folders, and images that are not numbers."""
    (work / "notes.txt").write_text("not a folder\n")
    return [
        Case("data: NaN in a plugin's images, --epochs 0",
             [*DNN, "train", "--dataset", "nans", "--epochs", "0"], 1,
             message="NaN or infinite", quick=True),
        Case("data: DNN_DATA_DIR=/dev/zero", [*DNN, "train", "--epochs", "0"], 2,
             env={"DNN_DATA_DIR": "/dev/zero"}, message="$DNN_DATA_DIR /dev/zero is not a folder",
             quick=True),
        Case("data: DNN_DATA_DIR naming a file", [*DNN, "train", "--epochs", "0"], 2,
             env={"DNN_DATA_DIR": str(work / "notes.txt")}, message="is a file, not a folder"),
        Case("data: --data-dir /dev/zero", [*DNN, "train", "--epochs", "0", "--data-dir",
                                            "/dev/zero"], 2, message="is not a folder"),
    ]


def mnist_cases(work: Path, mnist: Path) -> list[Case]:
    """Hostile MNIST files beside the real ones in a folder given as --data-dir."""
    data = {
        "a gzip bomb as MNIST's images": {MNIST[0]: gzip_bomb},
        "a sparse 4 GiB raw IDX": {MNIST[0]: sparse_raw},
        "a header claiming 4 GiB": {MNIST[0]: lambda path: path.write_bytes(
            bytes([0, 0, 8, 3]) + np.asarray((1 << 20, 64, 64), ">u4").tobytes())},
        "a truncated gzip": {MNIST[1]: lambda path: path.write_bytes(
            (mnist / MNIST[1]).read_bytes()[:100])},
        "float images holding NaN, --epochs 0": {MNIST[0]: float_idx_with_nan},
    }
    found = []
    for index, (name, files) in enumerate(data.items()):
        folder = mnist_copy(mnist, work / f"data{index}", files)
        found.append(Case(f"data: {name}", [*DNN, "train", "--epochs", "0" if "NaN" in name
                                            else "1", "--data-dir", str(folder)], 1))
    return found


def signal_and_resume_cases(work: Path, model: Path) -> list[Case]:
    """Signals while training, and a checkpoint of layers the command line does not build."""
    dropout = rewritten(model, work / "dropout.npz", lambda meta, arrays: meta["model"][
        "layers"].insert(1, {"class": "Dropout", "rate": 0.2}))
    long_run = [*DNN, "train", "--dataset", "tiny", "--hidden", "4096", "--epochs", "100000",
                "--save", str(work / "interrupted.npz")]
    return [
        Case("signals: SIGTERM while training with --save", long_run, 128 + signal.SIGTERM,
             message="stopped by SIGTERM", signal_after=8.0, allowed_new=("interrupted.npz",)),
        Case("signals: SIGHUP while training with --save", long_run, 128 + signal.SIGHUP,
             message="stopped by SIGHUP", signal_after=3.0, allowed_new=("interrupted.npz",),
             signal_number=signal.SIGHUP, quick=True),
        Case("signals: Ctrl-C 0.25 s after the console script starts",
             [*console_script(), "train", "--dataset", "tiny", "--epochs", "100000"], 130,
             message="interrupted (Ctrl-C)", signal_after=0.25, signal_number=signal.SIGINT),
        Case("resume: a checkpoint with Dropout, --dtype float64",
             [*DNN, "train", "--dataset", "tiny", "--resume", str(dropout), "--dtype",
              "float64"], 1, message="-> dropout -> 3 softmax (float64)", quick=True),
    ]


def cases(work: Path, mnist: Path | None, site: Path, quick: bool = False) -> list[Case]:
    """Every hostile case, its files made in ``work``, or with ``quick`` those marked quick
    (the slow groups, of which none is, left unmade); those reading MNIST where ``mnist`` (a
    folder of its files) is given."""
    model = trained_checkpoint(work / "model.npz", site)
    found = (lying_checkpoint_cases(work, model) + file_cases(work, model)
             + flag_and_plugin_cases() + data_cases(work) + signal_and_resume_cases(work, model))
    if not quick:
        found += checkpoint_cases(work, model) + (mnist_cases(work, mnist) if mnist else [])
    return [case for case in found if case.quick or not quick]


def snapshot(folder: Path) -> dict:
    """``{path: (bytes, mode)}`` of every file below ``folder``, sizes only for big ones."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            content = path.read_bytes() if info.st_size < (1 << 20) else info.st_size
            found[path] = (content, stat.S_IMODE(info.st_mode))
    return found


def check(case: Case, work: Path, site: Path) -> dict:
    """Run ``case``; its figures and the rules it broke."""
    before = snapshot(work)
    status, output, peak = run(case.args, site, signal_after=case.signal_after, cwd=work,
                               signal_number=case.signal_number, env=case.env)
    after = snapshot(work)
    broken = [f"hung: killed after {TIMEOUT_SECONDS} s"] if status == -signal.SIGKILL else []
    if "Traceback" in output:
        broken.append("a traceback")
    if status != case.status:
        broken.append(f"exit status {status}, not {case.status}")
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    if case.status and (len(lines) != 1 or case.message not in lines[0]):
        broken.append(f"not one Error line with {case.message!r}: {output[-300:]!r}")
    if peak >= MEMORY_LIMIT:
        broken.append(f"peak RSS {peak / 2**20:.0f} MiB")
    for path in case.protected:
        if after.get(path) != before.get(path):
            broken.append(f"{path.name} was changed")
    for path in case.removed:
        if path.exists():
            broken.append(f"{path.name} was not removed")
    created = sorted(path.name for path in set(after) - set(before)
                     if path.name not in case.allowed_new)
    changed = sorted(path.name for path in set(before) & set(after)
                     if before[path] != after[path] and path not in case.protected)
    leftovers = created + [name for name in changed if name.endswith(".part")]
    if leftovers:
        broken.append(f"left behind {leftovers}")
    return {"case": case.name, "status": status, "peak_mib": round(peak / 2**20),
            "broken": broken}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"),
                        help="a folder with MNIST's four files")
    parser.add_argument("--cases", default="", help="only the cases whose name matches")
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--quick", action="store_true",
                        help="only a handful of representative cases (for CI; no MNIST)")
    args = parser.parse_args()
    if not args.data_dir and not args.quick:
        parser.error("give --data-dir or set DNN_DATA_DIR (or run --quick)")
    with tempfile.TemporaryDirectory(prefix="dnn-hostile-") as folder:
        root = Path(folder)
        site = fake_site(root / "site")
        work = root / "work"
        work.mkdir()
        mnist = None if args.quick else Path(args.data_dir)
        results = [check(case, work, site) for case in cases(work, mnist, site, args.quick)
                   if re.search(args.cases, case.name)]
    for result in results:
        verdict = "ok" if not result["broken"] else "BROKEN: " + "; ".join(result["broken"])
        print(f"{result['case']:66s} exit {result['status']:3d}  peak RSS "
              f"{result['peak_mib']:5d} MiB  {verdict}")
    broken = [result for result in results if result["broken"]]
    tracebacks = sum("a traceback" in result["broken"] for result in results)
    print(f"{len(results)} cases: {tracebacks} tracebacks, peak RSS "
          f"{max(result['peak_mib'] for result in results)} MiB (limit "
          f"{MEMORY_LIMIT // 2**20}), {len(broken)} broke a rule")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
