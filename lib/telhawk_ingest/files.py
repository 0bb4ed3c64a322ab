"""Durable, private files: the few system calls every on-disk promise here is built from.

Here: creating private directories (0700 at every level we create), writing a whole buffer (and
fsync'ing it, new file or append), fsync'ing a directory so renames and creations survive a
power cut, and asking whether a directory can take new files. Not here: what is written (dlq.py,
storage/local.py, audit.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL
APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents with mode 0700 (mkdir's `parents` would use 0777)."""
    missing = []
    level = path
    while not level.exists():
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it first
        # A new directory's own entry is durable only once its parent is fsync'd.
        fsync_dir(directory.parent)
    return path


def open_append(path: Path) -> int:
    """An O_APPEND descriptor; when this call creates the file, its directory entry is fsync'd
    too, since fsync'ing the file alone does not keep a new file's name through a power cut."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND, 0o600)
    except FileNotFoundError:
        pass
    fd = os.open(path, APPEND, 0o600)
    try:
        fsync_dir(path.parent)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`; a short write (a signal, a pipe) continues where it stopped."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_synced(path: Path, data: bytes) -> None:
    """Create `path` (0600; it must not exist), write all of `data`, fsync. The caller makes the
    name durable, usually by renaming it into place and fsync'ing the directory."""
    fd = os.open(path, NEW, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_synced(path: Path, data: bytes) -> None:
    """Append all of `data` in one write and fsync it, creating the file durably if needed."""
    fd = open_append(path)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# os.access with the effective user and groups where the platform has it (Linux does).
_EFFECTIVE = os.access in os.supports_effective_ids


def unwritable(path: Path) -> str | None:
    """Why this process cannot create files in directory `path` now; None when it can.

    Missing or not a directory; on a read-only filesystem (statvfs ST_RDONLY: also read-only bind
    mounts, which refuse even root); or no write and search permission for the effective user and
    groups (access(2) with AT_EACCESS; root passes, as the kernel lets it write).
    """
    try:
        mode = os.stat(path).st_mode
        flags = os.statvfs(path).f_flag
    except OSError as exc:
        return f"{path} is not usable ({exc.strerror})"
    if not stat.S_ISDIR(mode):
        return f"{path} is not a directory"
    if flags & os.ST_RDONLY:
        return f"{path} is on a read-only filesystem"
    if not os.access(path, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE):
        return f"{path} is not writable by uid {os.geteuid()}"
    return None


def uncreatable(path: Path) -> str | None:
    """`unwritable` for a directory created on first use: asked of its nearest existing ancestor
    when it does not exist yet (e.g. `data/` under a missing or read-only parent)."""
    level = path
    while not level.exists() and level.parent != level:
        level = level.parent
    return unwritable(level)
