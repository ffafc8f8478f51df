import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from pytest_ckpt.formats.atomic import atomic_path, atomic_write_text


def test_written_file_gets_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "golden.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["golden.json"]


@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_a_replaced_file_keeps_its_mode(tmp_path, mode):
    import pytest_ckpt as pc
    import torch

    path = pc.save(torch.nn.Linear(2, 2), tmp_path / "secret.pt")
    os.chmod(path, mode)
    pc.save(torch.nn.Linear(2, 2), path)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    atomic_write_text(path.with_suffix(".json"), "{}")
    os.chmod(path.with_suffix(".json"), mode)
    atomic_write_text(path.with_suffix(".json"), "{}")
    assert stat.S_IMODE(path.with_suffix(".json").stat().st_mode) == mode


def test_the_process_umask_is_never_changed(tmp_path, monkeypatch):
    # os.umask can only read the mask by setting it: another thread creating a file
    # meanwhile would get mode 0666. A new file must get the umask without that
    def refuse(_):
        raise AssertionError("os.umask called")

    old = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", refuse)
        path = atomic_write_text(tmp_path / "new.json", "{}")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


KILLED_SAVE = """
import os, signal, sys
import torch
import pytest_ckpt as pc

real = torch.save
def save_then_die(obj, f, *a, **kw):
    real(obj, f, *a, **kw)
    os.kill(os.getpid(), signal.SIGKILL)  # killed before the rename: its temporary file stays
torch.save = save_then_die
pc.save(torch.nn.Linear(2, 2), sys.argv[1])
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX: SIGKILL and flock")
def test_a_later_save_removes_what_a_killed_save_left_and_nothing_else(tmp_path):
    import fcntl
    import subprocess
    import sys
    import time
    from pathlib import Path

    import pytest_ckpt as pc
    import torch

    path = tmp_path / "model.pt"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    # the killed save's temporary file, the directory of its link named model.pt, and no model.pt
    left, holder = sorted(tmp_path.iterdir())
    assert left.name.startswith(".model.pt.") and left.name.endswith(".tmp")
    assert holder.name == left.name + ".d" and [p.name for p in holder.iterdir()] == ["model.pt"]
    keep = {
        ".model.pt.k3x9q2ab.tmp.bak": "not our shape",
        ".other.pt.k3x9q2ab.tmp": "another checkpoint's",
        "model.pt.k3x9q2ab.tmp": "not hidden: not ours",
        ".model.pt.later123.tmp": "newer than the save",
        ".model.pt.running1.tmp": "a save still writing it",
    }
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    future = time.time() + 3600
    os.utime(tmp_path / ".model.pt.later123.tmp", (future, future))
    running = os.open(tmp_path / ".model.pt.running1.tmp", os.O_RDONLY)
    fcntl.flock(running, fcntl.LOCK_EX)
    try:
        pc.save(torch.nn.Linear(2, 2), path)
    finally:
        os.close(running)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "model.pt"])
    pc.verify(path)


# -- where a save cannot write: the target named, never a hidden temporary name ------------------

@contextlib.contextmanager
def unprivileged():
    """The block runs as a user permission bits apply to: root ignores them, so as root the
    effective user and group become nobody's for the block (a real EACCES from the kernel)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def read_only_dir():
    base = Path(tempfile.mkdtemp())
    base.chmod(0o755)  # nobody may look inside, not write
    directory = base / "snapshots"
    directory.mkdir()
    (directory / "test_model.json").write_text("{}")
    directory.chmod(0o555)
    yield directory
    directory.chmod(0o755)
    shutil.rmtree(base)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permission bits")
def test_a_save_into_a_read_only_directory_names_the_target_and_the_cause(read_only_dir, tmp_path):
    import pytest_ckpt as pc
    import torch

    # the same writes where they may happen first: every module they import is imported while
    # this process can still read the interpreter's files
    pc.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    pc.api.save_schema(torch.nn.Linear(2, 2), tmp_path / "test_model.json")
    target = read_only_dir / "model.pt"
    with unprivileged(), pytest.raises(PermissionError) as info:
        pc.save(torch.nn.Linear(2, 2), target)
    message = str(info.value)
    assert info.value.filename == str(target) and ".tmp" not in message, message
    assert f"Permission denied: cannot write model.pt in {read_only_dir}" in message, message
    # --ckpt-update writes the snapshot the same way: an existing golden file in a read-only directory
    golden = read_only_dir / "test_model.json"
    with unprivileged(), pytest.raises(PermissionError) as info:
        pc.api.save_schema(torch.nn.Linear(2, 2), golden)
    assert info.value.filename == str(golden) and ".tmp" not in str(info.value), str(info.value)
    assert golden.read_text() == "{}"


def test_a_save_to_a_symlink_loop_refuses_and_leaves_the_link(tmp_path):
    import pytest_ckpt as pc
    import torch

    loop = tmp_path / "model.pt"
    loop.symlink_to("model.pt")
    with pytest.raises(OSError, match="a symlink loop .*: not replaced") as info:
        pc.save(torch.nn.Linear(2, 2), loop)
    assert info.value.filename == str(loop)
    assert loop.is_symlink() and os.readlink(loop) == "model.pt"
    with pytest.raises(pc.CheckpointError) as read:
        pc.verify(loop)
    assert read.value.kind == "unreadable" and read.value.cause.startswith("a symlink loop")


def test_a_saved_zip_is_named_after_the_target_not_the_temporary_file(tmp_path):
    import zipfile

    import pytest_ckpt as pc
    import torch

    path = pc.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    folders = {name.split("/", 1)[0] for name in zipfile.ZipFile(path).namelist()}
    assert folders == {"model"}  # what torch.save(..., "model.pt") names it
    assert set(pc.load_state_dict(path)) == {"weight", "bias"}
