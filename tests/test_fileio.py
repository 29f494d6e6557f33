"""Atomic writes: what a saved file looks like, and what a failed write leaves behind."""

import os
import stat

import pytest

from dnn.errors import UsageError
from dnn.fileio import atomic_write, check_writable

posix_modes = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@posix_modes
def test_a_new_file_gets_the_mode_open_would_give_it(tmp_path, umask_027):
    with atomic_write(tmp_path / "model.npz") as file:
        file.write(b"weights")
    assert mode_of(tmp_path / "model.npz") == 0o640


@posix_modes
def test_a_replaced_file_keeps_its_mode(tmp_path, umask_027):
    target = tmp_path / "history.json"
    target.write_text("old")
    os.chmod(target, 0o604)
    with atomic_write(target, "w") as file:
        file.write("new")
    assert target.read_text() == "new"
    assert mode_of(target) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "model.npz"
    target.write_bytes(b"the user's model")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as file:
            file.write(b"half a mod")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"the user's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_check_writable_makes_the_folder_and_leaves_no_file(tmp_path):
    check_writable(tmp_path / "runs" / "model.npz", "--save")
    assert (tmp_path / "runs").is_dir()
    assert list((tmp_path / "runs").iterdir()) == []


def test_check_writable_names_the_option_when_a_file_is_in_the_way(tmp_path):
    (tmp_path / "notes.txt").write_text("a user's file")
    with pytest.raises(UsageError, match=r"^--plot .*notes.txt.*a file stands where its folder"):
        check_writable(tmp_path / "notes.txt" / "curve.png", "--plot")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_a_symbolic_link_stays_a_link_and_its_target_gets_the_content(tmp_path):
    target = tmp_path / "models" / "model.npz"
    target.parent.mkdir()
    target.write_bytes(b"old weights")
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    check_writable(link, "--save")
    with atomic_write(link) as file:
        file.write(b"new weights")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new weights"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.npz"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_written_through_not_replaced(tmp_path):
    import threading

    pipe = tmp_path / "history.json"
    os.mkfifo(pipe)
    check_writable(pipe, "--history")  # asks, without opening: a pipe would block
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()), daemon=True)
    reader.start()
    with atomic_write(pipe, "w") as file:
        file.write('{"epochs": []}')
    reader.join(timeout=10)
    assert received == [b'{"epochs": []}']
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)  # /dev/null would have been replaced the same way
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]
