#!/usr/bin/env python
"""The cpu backend's seed-network epoch at two git revisions, in one run: did a change make
training slower?

Each revision is checked out into a temporary git worktree with its C extension built in place;
then rounds alternate between them (one child process per revision and round, its ``dnn``
imported from that worktree, the first to run alternating), so that the machine's drift hits
both alike.  Reports each
revision's median epoch seconds and the median per-round ratio of the second to the first.

    python scripts/bench_revisions.py BEFORE AFTER --data-dir ../shared/data/mnist [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in a child with PYTHONPATH at a worktree: EPOCHS epochs of the seed network after a
# warm-up epoch, then one JSON line: where dnn came from and each epoch's training seconds.
CHILD = """
import json, sys
import dnn
from dnn.backends.cpu import CpuBackend
from dnn.datasets import get
from dnn.layers import Dense
from dnn.utils import to_categorical

(x, y), _ = get("mnist").load(sys.argv[1])
model = dnn.Sequential([Dense(512, activation="relu"), Dense(10, activation="softmax")],
                       seed=0, backend=CpuBackend())
model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x, to_categorical(y), epochs=int(sys.argv[2]) + 1, batch_size=128,
                    verbose=0)
# Training seconds per epoch: History.seconds now, the logs' "seconds" in older revisions.
seconds = getattr(history, "seconds", None) or history.history["seconds"]
seconds = seconds[1:]
print(json.dumps({"dnn": dnn.__file__, "seconds": seconds}))
"""


def worktree(revision: str, folder: Path) -> Path:
    """``revision`` checked out under ``folder`` with its C extension built in place."""
    path = folder / revision.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path),
                    revision], check=True, capture_output=True)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=path,
                   check=True, capture_output=True)
    return path


def epochs_at(path: Path, data_dir: str, epochs: int) -> list[float]:
    # Run from the worktree too: "python -c" puts the working folder first on sys.path.
    environment = {**os.environ, "PYTHONPATH": str(path)}
    result = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(data_dir),
                             str(epochs)], cwd=path, env=environment, check=True,
                            capture_output=True, text=True)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    if not record["dnn"].startswith(str(path)):
        raise SystemExit(f"the child imported dnn from {record['dnn']}, not {path}")
    return record["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per child")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("give --data-dir or set DNN_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="dnn-revisions-") as folder:
        paths = {}
        try:
            for revision in (args.before, args.after):
                paths[revision] = worktree(revision, Path(folder))
            times = {revision: [] for revision in paths}
            ratios = []
            for round_number in range(args.rounds):
                medians = {}
                order = list(paths.items())  # who goes first alternates: no order bias
                for revision, path in order[::-1] if round_number % 2 else order:
                    seconds = epochs_at(path, args.data_dir, args.epochs)
                    times[revision] += seconds
                    medians[revision] = statistics.median(seconds)
                ratios.append(medians[args.after] / medians[args.before])
        finally:
            for path in paths.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(path)], capture_output=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for revision, seconds in times.items():
        print(f"{revision}: median {statistics.median(seconds):.3f} s/epoch over "
              f"{len(seconds)} epochs (min {min(seconds):.3f}, max {max(seconds):.3f})")
    print(f"{args.after} / {args.before}: median per-round ratio {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
