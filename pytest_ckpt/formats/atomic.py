"""Write a file so that readers see the old content or the new, never a torn one."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Iterator

try:  # POSIX: a live save holds a lock on its temporary file, so a cleaner can tell it from debris
    import fcntl
except ImportError:  # pragma: no cover - Windows: age alone decides
    fcntl = None  # type: ignore[assignment]

#: the characters of a temporary file's random part (tempfile.mkstemp's, which older versions used)
_RANDOM = "abcdefghijklmnopqrstuvwxyz0123456789_"


def temporary_name(path: Path) -> str:
    """``.model.pt.k3x9q2ab.tmp``: hidden, beside ``path``, ours by its shape."""
    return f".{path.name}.{''.join(secrets.choice(_RANDOM) for _ in range(8))}.tmp"


def _ours(path: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(path.name)}\.[{_RANDOM}]{{8}}\.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On error the temporary file is removed and ``path`` is untouched. A file being
    replaced keeps its mode (a 0600 checkpoint stays 0600); a new file gets the mode any
    new file gets here (the umask, applied by the system: the process umask is never
    changed). A symlink is written through: the file it names is replaced, the link stays.
    Temporary files an earlier, killed save to the same path left behind are
    removed: only names of this shape, older than this save, and (on POSIX) not locked
    by a save still running.

    >>> with atomic_path("out.json") as tmp:           # doctest: +SKIP
    ...     tmp.write_text("{}")
    """
    path = Path(path)
    if path.is_symlink():  # write through to the file the link names; the link stays a link
        path = _through_link(path)
    started = time.time()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create(path)
    except OSError as e:  # said of the target, not of a hidden temporary name
        raise _unwritable(path, e) from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the process dying
        mode = _mode_of(path)
        if mode is not None:
            os.fchmod(fd, mode)
        if fcntl is None:  # Windows cannot rename over a file that is open
            os.close(fd)
            fd = -1
        remove_stale(path, before=started, keep=tmp)
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _unwritable(path, e) from None
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def _through_link(link: Path) -> Path:
    """The file a symlink names (it may not exist yet); a loop is refused, never replaced."""
    try:
        return Path(os.path.realpath(link, strict=True))
    except FileNotFoundError:  # a link to a file not written yet: written there
        return Path(os.path.realpath(link))
    except OSError:  # ELOOP: replacing the link would break what it was meant to name
        raise OSError(errno.ELOOP, "a symlink loop (it names itself, directly or through other links): "
                      "not replaced; remove it, or point it at the file to write", str(link)) from None


def _unwritable(path: Path, e: OSError) -> OSError:
    """``e`` (the same class: PermissionError stays one) naming the target and the cause."""
    where = path.parent if e.filename is None or Path(e.filename) != path else path
    cause = (f"{e.strerror or e}: cannot write {path.name} in {where} "
             "(an atomic save creates a temporary file beside it, then renames it over it)")
    return type(e)(e.errno, cause, str(path))


#: the hidden directory beside a temporary file that holds a link to it under the target's name
NAMED = ".d"


@contextlib.contextmanager
def under_target_name(tmp: Path) -> Iterator[Path]:
    """A path named as the file ``tmp`` becomes, whose writes land in ``tmp``: ``torch.save`` names a
    zip's top folder after the file it writes, and ``model.pt``'s folder is ``model``, not
    ``.model.pt.k3x9q2ab``. A link in a hidden directory beside ``tmp`` (``tmp`` + ``.d``), removed
    after; where no symlink can be made (Windows without the privilege), ``tmp`` itself."""
    m = re.fullmatch(rf"\.(.+)\.[{_RANDOM}]{{8}}\.tmp", tmp.name)
    if m is None:
        yield tmp
        return
    holder = tmp.with_name(tmp.name + NAMED)
    link = holder / m[1]
    try:
        os.mkdir(holder)
        os.symlink(os.path.join(os.pardir, tmp.name), link)
    except OSError:
        shutil.rmtree(holder, ignore_errors=True)
        yield tmp
        return
    try:
        yield link
    finally:
        with contextlib.suppress(OSError):
            os.unlink(link)
            os.rmdir(holder)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def remove_stale(path: Path, *, before: float, keep: Path | None = None) -> list[Path]:
    """Remove the temporary files of earlier saves to ``path`` that never finished.

    Only files named as :func:`temporary_name` names them for this ``path``, last
    modified before ``before`` (the start of the save that cleans up), and not locked by
    a save still writing. Returns what was removed.
    """
    ours = _ours(path)
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    holders = []
    for name in names:
        candidate = path.parent / name
        if name.endswith(NAMED) and ours.fullmatch(name[: -len(NAMED)]):
            holders.append(candidate)
            continue
        if not ours.fullmatch(name) or candidate == keep:
            continue
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            st = candidate.lstat()
            if st.st_mtime < before and stat.S_ISREG(st.st_mode) and _remove_if_abandoned(candidate):
                removed.append(candidate)
    for holder in holders:  # a link's directory (under_target_name) goes with its temporary file
        with contextlib.suppress(OSError):
            st = holder.lstat()
            if st.st_mtime < before and stat.S_ISDIR(st.st_mode) \
                    and not holder.with_name(holder.name[: -len(NAMED)]).exists():
                shutil.rmtree(holder)
                removed.append(holder)
    return removed


def _create(path: Path) -> tuple[int, Path]:
    # 0o666 through os.open: the system applies the umask (and any default ACL), exactly as
    # for any new file, with no need to read the umask (os.umask can only read it by setting it)
    for _ in range(100):
        tmp = path.parent / temporary_name(path)
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")  # pragma: no cover


def _mode_of(path: Path) -> int | None:
    """The permission bits of the file being replaced, or None for a new file."""
    try:
        st = path.stat()
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _remove_if_abandoned(candidate: Path) -> bool:
    """Remove ``candidate`` unless a running save holds its lock (POSIX; elsewhere age decides)."""
    if fcntl is None:
        candidate.unlink()
        return True
    fd = os.open(candidate, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a save is writing it
        candidate.unlink()  # under our lock: no save can take it up meanwhile
        return True
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
