#!/usr/bin/env python
"""The cpu backend's seed-network epoch at two git revisions, in one run: did a change make
training slower?

Each revision's committed files are exported (``git archive``) into a temporary folder and its
C extension built there: the working tree, the index and the repository's worktrees are left
as they are, and so are uncommitted changes, which are not measured.  Then rounds alternate
between the revisions (one child process per revision and round, its ``dnn`` imported from that
folder, the first to run alternating), so that the machine's drift hits both alike.  Reports
each revision's median epoch seconds and the median per-round ratio of the second to the first.

    python scripts/bench_revisions.py BEFORE AFTER --data-dir MNIST_DIR [--rounds 5]

``--quick`` checks that the script works, in seconds: one round of one epoch on the first 512
training images (``HEAD HEAD`` compares the last commit with itself).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import QUICK_ROWS, add_quick_option, machine_line

ROOT = Path(__file__).resolve().parent.parent

# Run in a child with PYTHONPATH at a revision's folder: EPOCHS epochs of the seed network on
# the first ROWS images (all of them for 0) after a warm-up epoch, then one JSON line: where
# dnn came from and each epoch's training seconds.
CHILD = """
import json, sys
import dnn
from dnn.backends.cpu import CpuBackend
from dnn.datasets import get
from dnn.layers import Dense
from dnn.utils import to_categorical

data_dir, epochs, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or None
(x, y), _ = get("mnist").load(data_dir)
model = dnn.Sequential([Dense(512, activation="relu"), Dense(10, activation="softmax")],
                       seed=0, backend=CpuBackend())
model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x[:rows], to_categorical(y[:rows], 10), epochs=epochs + 1,
                    batch_size=128, verbose=0)
# Training seconds per epoch: History.seconds now, the logs' "seconds" in older revisions.
seconds = getattr(history, "seconds", None) or history.history["seconds"]
print(json.dumps({"dnn": dnn.__file__, "seconds": seconds[1:]}))
"""


def commit_of(revision: str) -> str:
    """The commit hash ``revision`` names in this repository."""
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify",
                           f"{revision}^{{commit}}"], check=True, capture_output=True,
                          text=True).stdout.strip()


def export(commit: str, folder: Path) -> Path:
    """``commit``'s files exported under ``folder`` with its C extension built in place."""
    path = folder / commit
    path.mkdir()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", "--format=tar", commit],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(path)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"git archive {commit} failed")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=path,
                   check=True, capture_output=True)
    return path


def epochs_at(path: Path, data_dir: str, epochs: int, rows: int) -> list[float]:
    """The training seconds of ``epochs`` epochs (after a warm-up one) of the revision exported
    at ``path``, in a child process."""
    # Run from that folder too: "python -c" puts the working folder first on sys.path.
    environment = {**os.environ, "PYTHONPATH": str(path)}
    result = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(data_dir),
                             str(epochs), str(rows)], cwd=path, env=environment, check=True,
                            capture_output=True, text=True)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    if not record["dnn"].startswith(str(path)):
        raise SystemExit(f"the child imported dnn from {record['dnn']}, not {path}")
    return record["seconds"]


def alternate(paths: dict, before: str, after: str, args) -> tuple[dict, list]:
    """``(times, ratios)``: each revision's epoch seconds over all rounds, and per round the
    ratio of ``after``'s median epoch to ``before``'s; ``paths`` maps each revision to its
    exported folder (the same folder for two names of one commit)."""
    rounds, epochs, rows = (1, 1, QUICK_ROWS) if args.quick else (args.rounds, args.epochs, 0)
    times = {revision: [] for revision in (before, after)}
    ratios = []
    for round_number in range(rounds):
        medians = {}
        order = [before, after]  # who goes first alternates: no order bias
        for revision in order[::-1] if round_number % 2 else order:
            seconds = epochs_at(paths[revision], args.data_dir, epochs, rows)
            times[revision] += seconds
            medians[revision] = statistics.median(seconds)
        ratios.append(medians[after] / medians[before])
    return times, ratios


def print_result(times: dict, ratios: list, before: str, after: str) -> None:
    """The machine, each revision's median epoch and spread, and the per-round ratios."""
    print(machine_line())
    for revision, seconds in times.items():
        print(f"{revision}: median {statistics.median(seconds):.3f} s/epoch over "
              f"{len(seconds)} epochs (min {min(seconds):.3f}, max {max(seconds):.3f})")
    print(f"{after} / {before}: median per-round ratio {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per child")
    add_quick_option(parser)
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("give --data-dir or set DNN_DATA_DIR")
    if args.before == args.after and not args.quick:
        parser.error("BEFORE and AFTER are the same revision")
    commits = {revision: commit_of(revision) for revision in (args.before, args.after)}
    with tempfile.TemporaryDirectory(prefix="dnn-revisions-") as folder:
        exported = {commit: export(commit, Path(folder)) for commit in set(commits.values())}
        paths = {revision: exported[commit] for revision, commit in commits.items()}
        times, ratios = alternate(paths, args.before, args.after, args)
    print_result(times, ratios, args.before, args.after)


if __name__ == "__main__":
    main()
