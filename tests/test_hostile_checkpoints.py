"""Checkpoints whose zip headers lie about their members: every claim is bounded by the bytes
the file holds, and the model is built only from weights that were really read."""

import json
import re
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

from dnn.errors import CheckpointError
from dnn.layers import Dense, Input
from dnn.models.sequential import Sequential
from dnn.models import load_model
from dnn.saving import checkpoint
from dnn.saving.npz_reader import NpzReader
from scripts.hostile import (DNN, ZIP_HEADERS, evaluate, fake_site, hollow, npy, overlapping,
                             resized, rewritten, run, trained_checkpoint, units_300000,
                             zipped)
from tests.conftest import peak_bytes

posix = pytest.mark.skipif(sys.platform == "win32", reason="os.wait4 and ru_maxrss")
META = npy(np.asarray(json.dumps({"format": "dnn-checkpoint", "version": 1})))
CLAIMS_300000 = {"weight_0": (1000, 300000), "weight_1": (300000,), "weight_2": (300000, 3)}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder of fake plugins (the tiny dataset among them) for PYTHONPATH."""
    return fake_site(tmp_path_factory.mktemp("hostile") / "site")


@pytest.fixture(scope="module")
def model(site):
    """A real checkpoint of a 12 -> 16 relu -> 3 softmax network, trained one epoch."""
    return trained_checkpoint(site.parent / "model.npz", site)


def never_built(monkeypatch):
    """Make building any model fail the test: a refused file must be refused before."""
    def build(self, input_shape):
        raise AssertionError(f"a model was built for {input_shape} inputs")

    monkeypatch.setattr(Sequential, "build", build)


def a_local_header_that_disagrees(path):
    """A checkpoint-like zip whose local header says its member is 1 byte longer than the zip
    directory says."""
    zipped(path, {"meta.npy": META})
    return resized(path, "meta.npy", len(META) + 1, len(META) + 1, ZIP_HEADERS[:1])


def lying(tmp_path, model, case):
    """The file of ``case`` (a key of LYING), made from the checkpoint ``model``."""
    path = tmp_path / "lying.npz"
    makers = {
        "both headers claim a 1.28 GB stored weight": lambda: hollow(
            model, path, {"weight_0": (20000000, 16)}),
        "the directory alone claims 1.28 GB": lambda: resized(
            zipped(path, {"meta.npy": META}), "meta.npy", 1280000000, 1280000000,
            ZIP_HEADERS[1:]),
        "a stored member claims to inflate": lambda: resized(
            zipped(path, {"meta.npy": META}), "meta.npy", 1 << 20, None, ZIP_HEADERS),
        "a deflated member claims more compressed bytes than the file": lambda: resized(
            zipped(path, {"meta.npy": META}, zipfile.ZIP_DEFLATED), "meta.npy", 60 << 20,
            1 << 20),
        "a directory entry points into another member": lambda: overlapping(path),
        "a local header disagrees with the directory": lambda: a_local_header_that_disagrees(
            path),
        "stored weights of 300,000 units": lambda: hollow(model, path, CLAIMS_300000,
                                                           units_300000),
        "deflated weights of 300,000 units that end early": lambda: hollow(
            model, path, {**CLAIMS_300000, "weight_0": (100, 300000)}, units_300000,
            zipfile.ZIP_DEFLATED),
    }
    return makers[case]()


LYING = {
    "both headers claim a 1.28 GB stored weight":
        "member 'weight_0.npy' claims 1,280,000,128 bytes of data; the file holds at most 192",
    "the directory alone claims 1.28 GB":
        "member 'meta.npy' claims 1,280,000,000 bytes of data; the file holds at most",
    "a stored member claims to inflate": "member 'meta.npy' is stored, yet its",
    "a deflated member claims more compressed bytes than the file":
        "member 'meta.npy' claims 1,048,576 bytes of data; the file holds at most",
    "a directory entry points into another member":
        f"member 'meta.npy' claims {len(META)} bytes of data; the file holds at most 0",
    "a local header disagrees with the directory":
        f"member 'meta.npy' has a local header claiming {len(META) + 1} bytes that inflate to "
        f"{len(META) + 1}; the zip directory says {len(META)} and {len(META)}",
    "stored weights of 300,000 units":
        "member 'weight_0.npy' claims 1,200,000,128 bytes of data; the file holds at most 192",
    "deflated weights of 300,000 units that end early":
        "weight_0 ends after 1,500,001 of the 120,000,000 bytes of data its header declares",
}


@pytest.mark.parametrize("case", sorted(LYING))
def test_zip_headers_that_lie_are_refused_before_anything_is_built(tmp_path, model, case,
                                                                   monkeypatch):
    path = lying(tmp_path, model, case)
    assert path.stat().st_size < 2 << 20
    never_built(monkeypatch)
    peak = peak_bytes(lambda: load_model(path), CheckpointError, re.escape(LYING[case]))
    assert peak < 8 << 20, f"refusing it took {peak:,} bytes"


def test_load_into_an_unbuilt_model_reads_the_weights_before_building_it(tmp_path, model,
                                                                         monkeypatch):
    path = lying(tmp_path, model, "deflated weights of 300,000 units that end early")
    unbuilt = Sequential([Dense(300000, activation="relu"), Dense(3, activation="softmax")])
    never_built(monkeypatch)
    peak = peak_bytes(lambda: checkpoint.load_into(unbuilt, path), CheckpointError,
                      re.escape(LYING["deflated weights of 300,000 units that end early"]))
    assert peak < 8 << 20, f"refusing it took {peak:,} bytes"


def test_a_stored_member_is_bounded_by_the_next_member_not_only_by_the_file(tmp_path):
    """Two members: the first claims its own bytes and the second's (the file could hold
    them, the space before the next header cannot)."""
    path = zipped(tmp_path / "m.npz", {"meta.npy": META, "weight_0.npy": npy(np.zeros(3))})
    resized(path, "meta.npy", len(META) + 100, len(META) + 100)
    with pytest.raises(CheckpointError, match=f"member 'meta.npy' claims {len(META) + 100} "
                       f"bytes of data; the file holds at most {len(META)} for it"):
        load_model(path)


def test_honest_stored_and_deflated_checkpoints_still_load(tmp_path, model):
    """np.savez and np.savez_compressed files of a model, with the zip64 extras and data
    descriptors zipfile writes, read back equal."""
    with np.load(model) as archive:
        arrays = {name: archive[name] for name in archive.files}
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, **arrays)
    with zipfile.ZipFile(tmp_path / "streamed.npz", "w") as archive:  # sizes after the data
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                member.write(npy(array))
    for path in (model, compressed, tmp_path / "streamed.npz"):
        loaded = load_model(path)
        for index, weight in enumerate(loaded.get_weights()):
            np.testing.assert_array_equal(weight, arrays[f"weight_{index}"])


def test_a_deflated_member_is_read_in_chunks_as_it_inflates(tmp_path):
    """An honest 8 MiB weight that deflate shrinks about twenty times is read into its array
    without a second copy of it on the way."""
    weight = np.random.default_rng(0).integers(0, 4, size=(1 << 17, 16)).astype(np.float32)
    path = zipped(tmp_path / "w.npz", {"meta.npy": META, "weight_0.npy": npy(weight)},
                  zipfile.ZIP_DEFLATED)
    tracemalloc.start()
    try:
        with NpzReader(path, lambda name: True) as archive:
            read = archive.array("weight_0")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(read, weight)
    assert peak < weight.nbytes + (6 << 20), f"reading it took {peak:,} bytes"  # 17.8 MB before


@posix
@pytest.mark.parametrize("command", ["evaluate", "train --resume"])
def test_no_lying_checkpoint_takes_a_command_past_1_gib(tmp_path, model, site, command):
    """The issue's files, run as a user runs them: each refused in one line, the process's
    peak RSS far under 1 GiB (3.8 GB, and 2.8 GB, before)."""
    for claims, change, message in (
            ({"weight_0": (20000000, 16)}, None, "claims 1,280,000,128 bytes of data"),
            (CLAIMS_300000, units_300000, "claims 1,200,000,128 bytes of data")):
        path = hollow(model, tmp_path / "lying.npz", claims, change)
        args = (evaluate(path) if command == "evaluate" else
                [*DNN, "train", "--dataset", "tiny", "--resume", str(path)])
        status, output, peak = run(args, site, cwd=tmp_path)
        assert status == 1 and "Traceback" not in output, output
        assert output.startswith("Error: ") and message in output and output.count("\n") == 1
        assert peak < 1 << 30, f"{command} peaked at {peak / 2**20:.0f} MiB"
        assert peak < 256 << 20  # python, NumPy and click: about 40 MiB


@pytest.mark.parametrize("declare", [
    lambda layers: layers.insert(0, {"class": "Input", "shape": [20000000]}),
    lambda layers: layers[0].update(input_dim=20000000),
    lambda layers: layers[0].update(input_shape=[20000, 1000]),
], ids=["an Input layer", "input_dim", "input_shape"])
def test_an_architecture_declaring_huge_inputs_is_refused_before_it_is_built(
        tmp_path, model, monkeypatch, declare):
    """A model whose first layer declares its inputs is built as soon as it is made: the
    file's weights (12 inputs here) are checked against the declared architecture first."""
    path = rewritten(model, tmp_path / "declares.npz",
                     lambda meta, arrays: declare(meta["model"]["layers"]))
    never_built(monkeypatch)
    message = "is damaged: weight 0 has shape (12, 16); its architecture"
    peak = peak_bytes(lambda: load_model(path), CheckpointError, re.escape(message))
    assert peak < 8 << 20, f"refusing it took {peak:,} bytes"


def test_a_model_declaring_its_inputs_loads_with_its_layers_and_names(tmp_path):
    unbuilt = Sequential([Input(shape=(12,)), Dense(16, activation="relu", name="hidden"),
                          Dense(3, activation="softmax")], seed=0)
    unbuilt.save(tmp_path / "declared.npz")
    loaded = load_model(tmp_path / "declared.npz")
    assert loaded.get_config() == unbuilt.get_config() and loaded.input_dim == 12
    assert [layer.name for layer in loaded.layers][0] == "hidden"
    for ours, theirs in zip(loaded.get_weights(), unbuilt.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
