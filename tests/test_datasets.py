"""IDX parsing of bad files, and downloads from a real local HTTP server (no network)."""

import gzip
import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from dnn.datasets import IdxDataset
from dnn.datasets.idx import read_idx, write_idx
from dnn.errors import DataError, UsageError
from tests.conftest import peak_bytes

IMAGES = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
LABELS = np.array([0, 1, 2, 0, 1, 2], np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_valid_idx_roundtrip(tmp_path, compress):
    path = tmp_path / "images.idx"
    write_idx(path, IMAGES, compress=compress)
    np.testing.assert_array_equal(read_idx(path, (6, 4, 4)), IMAGES)


def _bad_files(tmp_path):
    good = tmp_path / "good"
    write_idx(good, IMAGES)
    data = good.read_bytes()
    return {
        "truncated gzip": gzip.compress(data)[:40],
        "not gzip, not idx": b"hello, this is a text file\n",
        "wrong magic": b"\x01\x02" + data[2:],
        "unknown dtype": data[:2] + b"\x07" + data[3:],
        "truncated data": data[:-5],
        "trailing data": data + b"\x00",
        "empty": b"",
    }


@pytest.mark.parametrize("case", ["truncated gzip", "not gzip, not idx", "wrong magic",
                                  "unknown dtype", "truncated data", "trailing data", "empty"])
def test_bad_idx_files_are_named_in_one_line(tmp_path, case):
    path = tmp_path / "bad-file.gz"
    path.write_bytes(_bad_files(tmp_path)[case])
    before = path.read_bytes()
    with pytest.raises(DataError) as error:
        read_idx(path, (6, 4, 4))
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert path.read_bytes() == before  # the user's file is untouched


def test_wrong_counts_are_refused(tmp_path):
    path = tmp_path / "images"
    write_idx(path, IMAGES)
    with pytest.raises(DataError, match=r"has shape \(6, 4, 4\); expected \(7, 4, 4\)"):
        read_idx(path, (7, 4, 4))


# -- downloads -----------------------------------------------------------------------------
class Server:
    """A threaded HTTP server on 127.0.0.1: ``routes`` maps a path to bytes, or to a callable
    that handles the request itself."""

    def __init__(self):
        self.routes, self.requests = {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                elif callable(route):
                    route(self)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(route)))
                    self.end_headers()
                    self.wfile.write(route)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    running = Server()
    yield running
    running.close()


def _gz_files():
    files = {}
    for name, array in (("train-images.gz", IMAGES), ("train-labels.gz", LABELS),
                        ("test-images.gz", IMAGES[:3]), ("test-labels.gz", LABELS[:3])):
        header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
        files[name] = gzip.compress(header + array.tobytes(), mtime=0)
    return files


def make_dataset(mirrors, files):
    class Tiny(IdxDataset):
        name = "tiny_idx"
        image_shape = (4, 4)
        num_classes = 3
        sizes = {"train": 6, "test": 3}

    Tiny.mirrors = tuple(mirrors)
    Tiny.files = {
        role: (name, hashlib.md5(files[name]).hexdigest())
        for role, name in (("train_images", "train-images.gz"),
                           ("train_labels", "train-labels.gz"),
                           ("test_images", "test-images.gz"), ("test_labels", "test-labels.gz"))}
    return Tiny()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("DNN_CACHE_DIR", str(folder))
    monkeypatch.delenv("DNN_DATA_DIR", raising=False)
    return folder / "tiny_idx"


def test_download_success_then_cache_without_network(server, cache):
    files = _gz_files()
    server.routes.update({f"/a/{name}": data for name, data in files.items()})
    dataset = make_dataset([f"{server.url}/a/"], files)
    (x, y), (x_test, y_test) = dataset.load()
    np.testing.assert_allclose(x * 255, IMAGES.astype(np.float32))
    assert x.dtype == np.float32 and y.dtype == np.int64 and len(x_test) == 3
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    server.requests.clear()
    dataset.load()
    assert server.requests == []  # cached files never touch the network


def test_checksum_mismatch_moves_on_to_the_next_mirror(server, cache):
    files = _gz_files()
    server.routes.update({f"/bad/{name}": b"corrupted" + data for name, data in files.items()})
    server.routes.update({f"/good/{name}": data for name, data in files.items()})
    dataset = make_dataset([f"{server.url}/bad/", f"{server.url}/good/"], files)
    dataset.load()
    assert any(r.startswith("/bad/") for r in server.requests)
    assert (cache / "train-images.gz").read_bytes() == files["train-images.gz"]


def test_all_mirrors_failing_says_where_to_put_the_files(server, cache):
    files = _gz_files()
    dataset = make_dataset([f"{server.url}/missing/", "http://127.0.0.1:9/"], files)
    with pytest.raises(DataError) as error:
        dataset.load()
    message = str(error.value)
    assert "404" in message and "train-images.gz" in message and str(cache) in message
    assert not cache.exists() or not any(cache.iterdir())


def test_interrupted_transfer_leaves_no_partial_file(server, cache):
    files = _gz_files()

    def cut_short(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(files["train-images.gz"][:20])
        handler.close_connection = True

    server.routes["/cut/train-images.gz"] = cut_short
    dataset = make_dataset([f"{server.url}/cut/"], files)
    with pytest.raises(DataError, match="train-images.gz"):
        dataset.locate("train_images")
    assert list(cache.iterdir()) == []  # neither the file nor a temporary remains


def test_valid_files_in_a_read_only_folder_never_touch_the_network(server, cache, tmp_path):
    files = _gz_files()
    folder = tmp_path / "readonly"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    folder.chmod(0o555)
    try:
        dataset = make_dataset([f"{server.url}/never/"], files)
        (x, _), _ = dataset.load(folder)
        assert len(x) == 6 and server.requests == []
    finally:
        folder.chmod(0o755)


def test_files_in_the_data_dir_load_where_platformdirs_is_missing(tmp_path):
    """platformdirs names the user cache folder: it is imported only when the files are not in
    the data dir, so a machine without it loads them from --data-dir ($DNN_DATA_DIR)."""
    for name, data in _gz_files().items():
        (tmp_path / name).write_bytes(data)
    script = """import sys
sys.modules["platformdirs"] = None  # import platformdirs raises ImportError
try:
    import platformdirs
except ImportError:
    print("platformdirs: missing")
from tests.test_datasets import _gz_files, make_dataset
(x, _), (x_test, _) = make_dataset(["http://127.0.0.1:9/"], _gz_files()).load()
print(len(x), len(x_test))
"""
    environment = {name: value for name, value in os.environ.items() if name != "DNN_CACHE_DIR"}
    environment["DNN_DATA_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, env=environment, cwd=Path(__file__).parent.parent)
    assert result.stdout.splitlines() == ["platformdirs: missing", "6 3"], result.stderr


def test_real_mnist_loads_with_documented_counts(mnist_dir):
    from dnn.datasets import get

    (x, y), (x_test, y_test) = get("mnist").load(mnist_dir)
    assert x.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() == 1


def test_keras_load_data_gives_the_files_bytes_and_load_scales_them(mnist_dir):
    from dnn.datasets import get, mnist

    (images, labels), (test_images, test_labels) = mnist.load_data(mnist_dir)
    assert images.shape == (60000, 28, 28) and test_labels.shape == (10000,)
    assert all(array.dtype == np.uint8 and array.flags.writeable
               for array in (images, labels, test_images, test_labels))
    files = {role: mnist_dir / name for role, (name, _) in mnist.MNIST.files.items()}
    assert np.array_equal(images, read_idx(files["train_images"], (60000, 28, 28)))
    assert np.array_equal(test_labels, read_idx(files["test_labels"], (10000,)))
    (x, y), _ = get("mnist").load(mnist_dir)
    assert np.array_equal(x, images.astype(np.float32) / np.float32(255))
    assert np.array_equal(y, labels)


@pytest.mark.parametrize("split", ["train", "test"])
def test_class_counts_are_checked_when_the_dataset_declares_them(server, cache, tmp_path, split):
    files = _gz_files()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    dataset = make_dataset([f"{server.url}/never/"], files)
    actual = {"train": (2, 2, 2), "test": (1, 1, 1)}  # LABELS and LABELS[:3]
    dataset.class_counts = dict(actual)
    dataset.load(tmp_path)
    dataset.class_counts[split] = (3, 2, 1)
    with pytest.raises(DataError) as error:
        dataset.load(tmp_path)
    message = str(error.value)
    assert message.startswith(str(tmp_path / f"{split}-labels.gz"))
    assert f"counts {list(actual[split])} images per class, not tiny_idx's [3, 2, 1]" in message
    assert "another dataset's files" in message and "\n" not in message


def test_the_real_mnist_files_are_not_taken_for_another_dataset_of_the_same_names(mnist_dir):
    from dnn.datasets.mnist import MNIST

    class BalancedLikeFashionMNIST(MNIST):
        name = "balanced"
        class_counts = {"train": (6000,) * 10, "test": (1000,) * 10}

    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz counts \[5923, 6742, "):
        BalancedLikeFashionMNIST().load(mnist_dir)


def test_check_dataset_says_what_breaks_the_contract():
    from dnn import testing

    class Uint8Images:
        name = "uint8_images"

        def load(self, data_dir=None):
            return (IMAGES, LABELS.astype(np.int64)), (IMAGES[:3], LABELS[:3].astype(np.int64))

    with pytest.raises(AssertionError, match="^the train images are uint8, not float32$"):
        testing.check_dataset(Uint8Images)

    class NumberedName(Uint8Images):
        name = 123

    with pytest.raises(AssertionError, match="set the class attribute name to a string .*, "
                                             "not 123"):
        testing.check_dataset(NumberedName)


def test_a_cache_folder_that_cannot_be_written_is_named_once_before_any_download(
        server, tmp_path, monkeypatch):
    in_the_way = tmp_path / "notes.txt"
    in_the_way.write_text("a user's file")
    monkeypatch.setenv("DNN_CACHE_DIR", str(in_the_way / "cache"))
    monkeypatch.delenv("DNN_DATA_DIR", raising=False)
    files = _gz_files()
    dataset = make_dataset([f"{server.url}/a/", f"{server.url}/b/"], files)
    with pytest.raises(DataError) as error:
        dataset.load()
    assert str(error.value) == (
        f"the tiny_idx cache {in_the_way / 'cache' / 'tiny_idx' / 'train-images.gz'}: cannot "
        "write a file there (a file stands where its folder should be); put train-images.gz "
        "(gzip or raw IDX) in the folder given as --data-dir ($DNN_DATA_DIR), or set "
        "$DNN_CACHE_DIR to a folder you can write")
    assert server.requests == [] and in_the_way.read_text() == "a user's file"


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "streamed"])
def test_a_mirror_sending_more_than_the_file_can_hold_is_cut_off(server, cache, announce):
    """A 300 MB answer for a file of a few hundred bytes: refused from its Content-Length, or
    stopped once the file's largest size has arrived, and nothing is left on disk."""
    files = _gz_files()
    sent = []

    def flood(handler):
        handler.send_response(200)
        if announce:
            handler.send_header("Content-Length", str(300 << 20))
        handler.end_headers()
        try:
            for _ in range(300):
                handler.wfile.write(bytes(1 << 20))
                sent.append(1)
        except OSError:  # the client hung up, as it should
            pass
        handler.close_connection = True

    server.routes["/flood/train-images.gz"] = flood
    dataset = make_dataset([f"{server.url}/flood/"], files)
    with pytest.raises(DataError, match="announces 314,572,800 bytes" if announce
                       else "sent more than the file's"):
        dataset.locate("train_images")
    assert list(cache.iterdir()) == []
    assert len(sent) < 300  # it stopped reading long before the end


def test_a_gzip_bomb_behind_a_valid_header_is_refused_without_being_inflated(tmp_path):
    """100 MB of zeros after the header of a 96-byte file, compressed to ~100 KB: the reader
    stops one byte after the data the header promised."""
    path = tmp_path / "train-images.gz"
    header = bytes([0, 0, 8, 3]) + np.asarray((6, 4, 4), ">u4").tobytes()
    with gzip.open(path, "wb") as file:
        file.write(header + IMAGES.tobytes())
        for _ in range(100):
            file.write(bytes(1 << 20))
    assert peak_bytes(lambda: read_idx(path, (6, 4, 4)), DataError, "trailing data") < 4 << 20


def test_a_huge_raw_file_or_header_is_refused_before_reading(tmp_path):
    sparse = tmp_path / "train-images-idx3-ubyte"
    header = bytes([0, 0, 8, 3]) + np.asarray((6, 4, 4), ">u4").tobytes()
    with open(sparse, "wb") as file:
        file.write(header)
        file.truncate(4 << 30)  # 4 GiB, sparse on disk
    assert peak_bytes(lambda: read_idx(sparse, (6, 4, 4)), DataError,
                      "holds 4294967296 bytes; its header") < 1 << 20
    claims = tmp_path / "claims"
    claims.write_bytes(bytes([0, 0, 8, 3]) + np.asarray((1 << 20, 1 << 10, 1 << 10),
                                                         ">u4").tobytes())
    with pytest.raises(DataError, match="more than the 1,073,741,824 an IDX file may hold"):
        read_idx(claims, (None, None, None))


def _float_idx(array) -> bytes:
    """``array`` as a gzip of an IDX of big-endian float32 (type 0x0D)."""
    header = bytes([0, 0, 0x0D, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return gzip.compress(header + np.asarray(array, ">f4").tobytes(), mtime=0)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("split", ["train", "test"])
def test_images_holding_nan_or_infinity_are_refused_naming_the_file(tmp_path, monkeypatch,
                                                                     split, value):
    """An IDX file of floats may hold NaN, which the [0, 1] check of the contract let
    through (every comparison with NaN is false): a run of --epochs 0 then exited 0."""
    monkeypatch.delenv("DNN_DATA_DIR", raising=False)
    files = _gz_files()
    images = IMAGES.astype(np.float32) if split == "train" else IMAGES[:3].astype(np.float32)
    images[1, 2, 3] = value
    files[f"{split}-images.gz"] = _float_idx(images)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match=f"^{tmp_path / f'{split}-images.gz'} holds NaN or "
                       "infinite values, which no image has$"):
        make_dataset(["http://127.0.0.1:9/"], files).load(tmp_path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_the_contract_refuses_images_holding_nan_or_infinity(value):
    from dnn.datasets import contract_problem

    clean = np.full((5, 3), 0.5, np.float32)
    x = clean.copy()
    x[2, 1] = value
    labels = np.arange(5) % 2
    assert contract_problem(((x, labels), (clean, labels))) == (
        "the train images hold NaN or infinite values")
    assert contract_problem(((clean, labels), (x, labels))) == (
        "the test images hold NaN or infinite values")


def test_zero_epochs_on_a_dataset_holding_nan_is_one_error_line(install_fake_plugin):
    from click.testing import CliRunner

    from dnn.cli import main

    install_fake_plugin("fake-nans", "1.0", {"dnn.datasets": {"nans": "fake_nans:Nans"}},
                        {"fake_nans": """
                            import numpy as np

                            class Nans:
                                def load(self, data_dir=None):
                                    x = np.full((30, 6), 0.5, np.float32)
                                    x[3, 4] = np.nan
                                    y = np.arange(30) % 3
                                    return (x, y), (x.copy(), y)
                        """})
    result = CliRunner(env={"DNN_DATA_DIR": None}).invoke(
        main, ["train", "--dataset", "nans", "--epochs", "0"])
    assert result.exit_code == 1, result.output
    assert result.output == ("Error: dataset 'nans' from fake-nans 1.0 broke the dataset "
                             "contract: the train images hold NaN or infinite values\n")


@pytest.mark.parametrize("given", ["argument", "environment"])
def test_a_data_folder_that_is_no_folder_is_refused_by_the_library(tmp_path, monkeypatch,
                                                                    given):
    """``mnist.load_data()`` with DNN_DATA_DIR=/dev/zero looked for files "in" it, then
    downloaded them: refused in one line naming it, as a file or a missing folder is."""
    from dnn.datasets import mnist

    monkeypatch.setenv("DNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DNN_DATA_DIR", raising=False)
    (tmp_path / "notes.txt").write_text("a user's notes")
    for folder, problem in (("/dev/zero", "is not a folder"),
                            (str(tmp_path / "notes.txt"), "is a file, not a folder"),
                            (str(tmp_path / "gone"), "does not exist")):
        if given == "environment":
            monkeypatch.setenv("DNN_DATA_DIR", folder)
        name = "data_dir" if given == "argument" else "$DNN_DATA_DIR"
        with pytest.raises(UsageError, match=f"^{re.escape(f'{name} {folder} {problem}')}$"):
            mnist.load_data(folder if given == "argument" else None)
    assert not (tmp_path / "cache").exists()
