"""Atomic writes: what a saved file looks like, and what a failed write leaves behind."""

import errno
import os
import re
import shutil
import socket
import stat
import tempfile
import time

import pytest

from dnn.errors import DnnError, FileWriteError, UsageError
from dnn.saving.fileio import atomic_write, check_writable, open_in_place
from tests.conftest import a_named_pipe

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


def test_check_writable_creates_nothing_not_even_the_folder(tmp_path):
    check_writable(tmp_path / "runs" / "model.npz", "--save")
    check_writable(tmp_path / "model.npz", "--save")
    assert list(tmp_path.iterdir()) == []


@posix_modes
def test_a_write_protected_file_is_refused_never_replaced(tmp_path):
    """Even for root, to whom open() would not say no: the user protected it."""
    target = tmp_path / "best.npz"
    target.write_bytes(b"the user's best model")
    os.chmod(target, 0o444)
    with pytest.raises(UsageError, match=r"^--save .*best.npz: cannot write there \(it is "
                       r"write-protected \(mode 0444\)\)"):
        check_writable(target, "--save")
    with pytest.raises(UsageError, match="not replacing it, it is write-protected"):
        with atomic_write(target) as file:
            file.write(b"new")
    assert target.read_bytes() == b"the user's best model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz"]


def test_the_longest_file_names_can_be_written(tmp_path):
    for length in (241, 250, 255):
        target = tmp_path / ("m" * (length - 4) + ".npz")
        check_writable(target, "--save")
        with atomic_write(target) as file:
            file.write(b"weights")
        assert target.read_bytes() == b"weights"


def test_temporaries_left_by_a_killed_writer_go_with_the_next_write(tmp_path):
    target = tmp_path / "model.npz"
    stale, fresh = tmp_path / ".model.npz.0123abcd.part", tmp_path / ".model.npz.89abcdef.part"
    other = tmp_path / ".other.npz.0123abcd.part"
    for leftover in (stale, fresh, other):
        leftover.write_bytes(b"half a model")
    old = time.time() - 3600
    for leftover in (stale, other):
        os.utime(leftover, (old, old))
    with atomic_write(target) as file:
        file.write(b"weights")
    names = sorted(p.name for p in tmp_path.iterdir())
    # a recent one may be another process's write in progress; another target's is not ours
    assert names == [fresh.name, other.name, "model.npz"]


def test_the_content_and_the_folder_are_flushed_to_disk_before_and_after_the_rename(
        tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace",
                        lambda *args: events.append("replace") or real_replace(*args))
    with atomic_write(tmp_path / "model.npz") as file:
        file.write(b"weights")
    expected = ["fsync", "replace", "fsync"] if os.name == "posix" else ["fsync", "replace"]
    assert events == expected


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


def _tiny_model():
    import dnn

    model = dnn.Sequential([dnn.layers.Dense(3)])
    model.build(4)
    return model


WRITERS = {  # every way dnn writes a file, each refusing what it must not write
    "check_writable": lambda path: check_writable(path, "--save"),
    "atomic_write": lambda path: atomic_write(path).__enter__(),
    "open_in_place to read too": lambda path: open_in_place(path, "a+"),
    "model.save": lambda path: _tiny_model().save(path),
    "model.save_weights": lambda path: _tiny_model().save_weights(path),
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("writer", WRITERS)
def test_a_named_pipe_is_refused_by_every_writer_before_it_could_block(tmp_path, writer):
    """A pipe nobody reads blocked model.save, ModelCheckpoint and CSVLogger forever (the
    command line refused it before a job): refused in one line by every writer, before
    anything opens it (a reader comes after 10 seconds, so a writer that blocks fails the
    test instead of hanging it)."""
    with a_named_pipe(tmp_path / "history.json") as pipe:
        with pytest.raises(UsageError, match=f"^(--save )?{re.escape(str(pipe))}: .*it is a "
                           r"named pipe, not a regular file\)?$"):
            WRITERS[writer](pipe)
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX") or not os.path.exists(os.devnull),
                    reason="no sockets in the file system, or no null device, here")
@pytest.mark.parametrize("writer", WRITERS)
def test_devices_and_sockets_are_refused_by_every_writer(tmp_path, writer):
    """Written in place before (/dev/null swallowed a model) or a bare OSError (a socket)."""
    folder = tempfile.mkdtemp(dir="/tmp")  # a socket's path must be short
    try:
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(os.path.join(folder, "s"))
        link = tmp_path / "out.npz"
        link.symlink_to(os.devnull)  # a link is followed to what it names
        for path, kind in ((os.path.join(folder, "s"), "a socket"),
                           (os.devnull, "a character device"), (link, "a character device")):
            with pytest.raises(UsageError, match=f"^(--save )?{re.escape(str(path))}: .*it "
                               f"is {kind}, not a regular file\\)?$"):
                WRITERS[writer](path)
        listening.close()
    finally:
        shutil.rmtree(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists(os.devnull),
                    reason="no named pipes, or no null device, here")
def test_a_log_goes_to_a_terminal_or_a_pipe_someone_reads_but_not_one_no_one_reads(tmp_path):
    with open_in_place(os.devnull, "w") as device:  # as /dev/stdout on a terminal
        device.write("epoch,loss\n")
    with a_named_pipe(tmp_path / "unread") as pipe:
        with pytest.raises(UsageError, match=f"^{re.escape(str(pipe))}: not writing to it, it "
                                             f"is a named pipe no one reads"):
            open_in_place(pipe, "w")
    read = tmp_path / "read"
    os.mkfifo(read)
    reader = os.open(read, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with open_in_place(read, "w") as log:
            log.write("epoch,loss\n")
        assert os.read(reader, 100) == b"epoch,loss\n"
    finally:
        os.close(reader)


@pytest.mark.parametrize("below", ["x.npz", "sub/x.npz"])
def test_a_file_where_the_folder_should_be_is_one_line_of_dnn_s_own_error(tmp_path, below):
    """Sequential.save("afile/x.npz"), a file named afile: not FileExistsError or
    NotADirectoryError from deep inside, but an OSError that is dnn's and says what is wrong."""
    import dnn

    afile = tmp_path / "afile"
    afile.write_text("a user's notes")
    model = dnn.Sequential([dnn.layers.Dense(3)])
    model.build(4)
    target = afile / below
    with pytest.raises(FileWriteError) as raised:
        model.save(target)
    assert isinstance(raised.value, OSError) and isinstance(raised.value, DnnError)
    assert str(raised.value) == f"cannot write {target}: a file stands where its folder " \
                                "should be"
    assert raised.value.errno in (errno.EEXIST, errno.ENOTDIR)
    assert afile.read_text() == "a user's notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_full_disk_is_dnn_s_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.npz"
    target.write_bytes(b"the user's model")

    def full(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FileWriteError, match=f"^cannot write {re.escape(str(target))}: "
                       f"{os.strerror(errno.ENOSPC)}$"):
        with atomic_write(target) as file:
            file.write(b"new weights")
    assert target.read_bytes() == b"the user's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


@pytest.mark.parametrize("writer", [*WRITERS, "open_in_place"])
def test_an_empty_path_is_refused_by_every_writer_naming_it(tmp_path, monkeypatch, writer):
    """``model.save("")`` said ": not replacing it, it is a folder" (the empty path taken for
    the current folder): one line naming the empty path, and nothing written anywhere."""
    monkeypatch.chdir(tmp_path)
    write = WRITERS.get(writer, lambda path: open_in_place(path, "w"))
    with pytest.raises(UsageError, match=r"^(--save )?'': .*an empty path names no file: give "
                                         r"the file's name\)?$"):
        write("")
    assert list(tmp_path.iterdir()) == []
