#!/usr/bin/env python
"""Hostile files, flags, plugins and signals against the ``dnn`` command line, each case in a
fresh process: no traceback, one ``Error:`` line where it refuses, peak memory (the process's
maximum resident set) under 1 GiB, and no file the user protected or did not name replaced or
left behind.

    python scripts/hostile.py --data-dir ../shared/data/mnist [--cases REGEX] [--json out.json]

Exits non-zero when any case breaks a rule.  It makes its files (gzip bombs, sparse 4 GiB
files, damaged checkpoints, fake plugins) in a temporary folder and deletes them after.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MEMORY_LIMIT = 1 << 30
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
    signal_after: float | None = None  # send SIGTERM after this many seconds
    allowed_new: tuple = ()  # names of files it may create in the work folder
    removed: list = field(default_factory=list)  # paths it must delete (stale temporaries)


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
}
ENTRY_POINTS = {"dnn.datasets": {"tiny": "hostile_tiny:Tiny"},
                "dnn.optimizers": {"quits": "hostile_quits:Nope", "chatty": "hostile_chatty:Chatty",
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


def run(command, site: Path, check=False, signal_after=None, cwd=None):
    """``(status, output, peak bytes)`` of ``command`` in a fresh process."""
    environment = {name: value for name, value in os.environ.items() if name != "DNN_DATA_DIR"}
    environment.update(PYTHONPATH=str(site), DNN_CACHE_DIR=str(site / "cache"))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=environment, cwd=cwd)
    if signal_after is not None:
        time.sleep(signal_after)
        os.kill(process.pid, signal.SIGTERM)  # not send_signal: it may reap the process
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if check and process.returncode != 0:
        raise SystemExit(f"{command} failed: {output}")
    return process.returncode, output, usage.ru_maxrss * 1024


def cases(work: Path, mnist: Path, site: Path) -> list[Case]:
    """Every hostile case, its files made in ``work``."""
    dnn = [sys.executable, "-m", "dnn"]
    model = trained_checkpoint(work / "model.npz", site)
    meta = npy(np.asarray(json.dumps({"format": "dnn-checkpoint", "version": 1})))

    def evaluate(path):
        return [*dnn, "evaluate", str(path), "--dataset", "tiny"]

    def with_method(method):
        return lambda path: patched(zipped(path, {"meta.npy": meta}), {
            (b"PK\x03\x04", 8): lambda old: method.to_bytes(2, "little"),
            (b"PK\x01\x02", 10): lambda old: method.to_bytes(2, "little")})

    checkpoints = {
        "an unused 3 GiB member": lambda path: zipped(
            path, {"meta.npy": meta, "extra.npy": (3 << 30, bytes(1 << 20))},
            zipfile.ZIP_DEFLATED),
        "a 3 GiB weight of zeros": lambda path: zipped(
            path, {"meta.npy": meta, "weight_0.npy": (3 << 30, bytes(1 << 20))},
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
            path, {"meta.npy": meta + zipped(work / "inner.zip", {"x.npy": meta}).read_bytes()}),
        "a member without .npy": lambda path: zipped(path, {"meta.npy": meta, "meta": b"x"}),
        "the encrypted flag": lambda path: patched(zipped(path, {"meta.npy": meta}), {
            (b"PK\x03\x04", 6): lambda old: bytes([old[0] | 1, old[1]]),
            (b"PK\x01\x02", 8): lambda old: bytes([old[0] | 1, old[1]])}),
        "compression method 1": with_method(1),
        "compression method 99": with_method(99),
        "a pickle": lambda path: path.write_bytes(b"\x80\x04K\x01."),
        "text": lambda path: path.write_text("not a model\n"),
    }
    found = [Case(f"checkpoint: {name}", evaluate(make(work / f"c{index}.npz")), 1)
             for index, (name, make) in enumerate(checkpoints.items())]
    data = {
        "a gzip bomb as MNIST's images": {MNIST[0]: gzip_bomb},
        "a sparse 4 GiB raw IDX": {MNIST[0]: sparse_raw},
        "a header claiming 4 GiB": {MNIST[0]: lambda path: path.write_bytes(
            bytes([0, 0, 8, 3]) + np.asarray((1 << 20, 64, 64), ">u4").tobytes())},
        "a truncated gzip": {MNIST[1]: lambda path: path.write_bytes(
            (mnist / MNIST[1]).read_bytes()[:100])},
    }
    for index, (name, files) in enumerate(data.items()):
        folder = mnist_copy(mnist, work / f"data{index}", files)
        found.append(Case(f"data: {name}", [*dnn, "train", "--epochs", "1", "--data-dir",
                                            str(folder)], 1))
    protected = work / "protected.npz"
    protected.write_bytes(model.read_bytes())
    protected.chmod(0o444)
    long_name = "m" * 246 + ".npz"  # a temporary's name is cut to fit NAME_MAX
    stale = work / f".{long_name[:239]}.0123abcd.part"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (time.time() - 3600,) * 2)
    train = [*dnn, "train", "--dataset", "tiny", "--hidden", "16", "--epochs", "1"]
    found += [
        Case("files: --save over a write-protected file", [*train, "--save", str(protected)], 2,
             protected=[protected], message="write-protected"),
        Case("files: --save in new folders with an unknown optimizer",
             [*train, "--save", str(work / "a" / "b" / "m.npz"), "--optimizer", "nope"], 2,
             message="unknown optimizer 'nope'"),
        Case("files: a 250-byte file name, beside a stale temporary of it",
             [*train, "--save", str(work / long_name)], 0, allowed_new=(long_name,),
             removed=[stale]),
        Case("signals: SIGTERM while training with --save",
             [*dnn, "train", "--dataset", "tiny", "--hidden", "4096", "--epochs", "100000",
              "--save", str(work / "interrupted.npz")], 128 + signal.SIGTERM,
             message="stopped by SIGTERM", signal_after=8.0, allowed_new=("interrupted.npz",)),
        Case("flags: --hidden 2**63", [*train, "--hidden", str(2 ** 63)], 2,
             message="Dense units must be"),
        Case("flags: --hidden 2**31-1", [*dnn, "train", "--dataset", "tiny", "--hidden",
                                         str(2 ** 31 - 1)], 1, message="more memory"),
        Case("plugins: sys.exit() at import", [*dnn, "plugins"], 0),
        Case("plugins: sys.exit() in update", [*train, "--optimizer", "stops"], 1,
             message="SystemExit: 4"),
        Case("plugins: printing at import, --json", [*dnn, "plugins", "--json"], 0),
        Case("plugins: sys.exit() at import, train with it", [*train, "--optimizer", "quits"], 1,
             message="SystemExit: 3"),
    ]
    return found


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
    status, output, peak = run(case.args, site, signal_after=case.signal_after, cwd=work)
    after = snapshot(work)
    broken = []
    if "Traceback" in output:
        broken.append("a traceback")
    if status != case.status:
        broken.append(f"exit status {status}, not {case.status}")
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    if case.status and (len(lines) != 1 or case.message not in lines[0]):
        broken.append(f"not one Error line with {case.message!r}: {output[-300:]!r}")
    if peak >= MEMORY_LIMIT:
        broken.append(f"peak memory {peak / 2**20:.0f} MiB")
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
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("give --data-dir or set DNN_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="dnn-hostile-") as folder:
        root = Path(folder)
        site = fake_site(root / "site")
        work = root / "work"
        work.mkdir()
        results = [check(case, work, site) for case in cases(work, Path(args.data_dir), site)
                   if re.search(args.cases, case.name)]
    for result in results:
        verdict = "ok" if not result["broken"] else "BROKEN: " + "; ".join(result["broken"])
        print(f"{result['case']:58s} exit {result['status']:3d}  {result['peak_mib']:5d} MiB  "
              f"{verdict}")
    broken = [result for result in results if result["broken"]]
    tracebacks = sum("a traceback" in result["broken"] for result in results)
    print(f"{len(results)} cases: {tracebacks} tracebacks, peak memory "
          f"{max(result['peak_mib'] for result in results)} MiB (limit "
          f"{MEMORY_LIMIT // 2**20}), {len(broken)} broke a rule")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
