"""Durable, private files: the few system calls every on-disk promise here is built from.

Here: creating private directories (0700 at every level we create), writing a whole buffer (and
fsync'ing it, new file or append), fsync'ing a directory so renames and creations survive a
power cut (alone, or shared by concurrent threads: DirSync), asking whether a directory can take
new files, which filesystem a path is on, and reading a file that someone else may have planted
on the volume. Not here: what is written (dlq.py, storage/local.py, audit.py).

Everything on the volumes is treated as possibly planted by someone who can write there: a file
is opened without following a symbolic link and without blocking (a FIFO would hang the reader),
must turn out to be a regular file, and is read up to a size cap. Whatever fails that raises
`UnsafeFile`, an OSError, so callers that already treat an unreadable file as corrupt do so
for these too, and nothing is ever read through a link.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL
# O_NOFOLLOW: a planted link is refused (ELOOP), never written through; O_NONBLOCK: a planted FIFO
# makes open fail (ENXIO) or return at once, where a blocking open would wait for a peer forever.
APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# How files on the volumes are opened for reading (module docstring).
READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFile(OSError):
    """A file on a volume that is not what the service wrote there: not a regular file (a FIFO,
    socket, device or directory), or larger than its reader takes. Symbolic links fail earlier,
    in open(2) with O_NOFOLLOW (ELOOP)."""


def open_regular(path: Path | str, flags: int = READ) -> int:
    """A descriptor of `path`, opened with `flags` (O_NOFOLLOW and O_NONBLOCK included by the
    callers here), after fstat says it is a regular file; UnsafeFile (closed) otherwise."""
    fd = os.open(path, flags, 0o600)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFile(errno.EINVAL, f"not a regular file ({_kind(mode)})", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The whole of a regular file of at most `max_bytes` bytes, read without following a link or
    blocking on a FIFO. OSError when it cannot be opened (ELOOP for a symbolic link,
    FileNotFoundError when absent); UnsafeFile when it is not a regular file or is larger."""
    return read_regular_ino(path, max_bytes)[0]


def read_regular_ino(path: Path | str, max_bytes: int) -> tuple[bytes, int]:
    """`read_regular`, and the inode number of the file that was read (from the same descriptor,
    so the pair belongs together even when the name is replaced meanwhile)."""
    fd = open_regular(path)
    try:
        st = os.fstat(fd)
        size = st.st_size
        if size > max_bytes:
            raise UnsafeFile(errno.EFBIG, f"{size} bytes, over the {max_bytes} this reader takes", str(path))
        chunks = []
        left = max_bytes + 1  # one more than allowed: a file that grew since fstat is caught too
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise UnsafeFile(errno.EFBIG, f"over the {max_bytes} bytes this reader takes", str(path))
        return b"".join(chunks), st.st_ino
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return f"mode {stat.S_IFMT(mode):o}"


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
    """An O_APPEND descriptor of a regular file (a link or FIFO planted under its name: OSError,
    UnsafeFile); when this call creates the file, its directory entry is fsync'd too, since
    fsync'ing the file alone does not keep a new file's name through a power cut."""
    try:
        return open_regular(path, APPEND & ~os.O_CREAT)
    except FileNotFoundError:
        pass
    fd = open_regular(path, APPEND)
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


def write_synced(path: Path, data: bytes) -> int:
    """Create `path` (0600; it must not exist), write all of `data`, fsync; return its inode
    number. The caller makes the name durable, usually by renaming it into place and fsync'ing
    the directory."""
    fd = os.open(path, NEW, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
        return os.fstat(fd).st_ino
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


class DirSync:
    """fsync of one directory, shared by the threads of a process that need it at once (group
    commit, as SQLite's WAL writers share a commit).

    A caller of `sync` has just renamed or created a name in the directory and needs it durable:
    it needs an fsync that *began* after its change (one already running may have read the
    directory before it). When none is running it starts one at once, so a lone caller waits
    for exactly one fsync, as with `fsync_dir`. When one is running it waits for that one to end
    and then for the next, which one of the callers that arrived meanwhile starts for all of
    them: a caller waits for at most the rest of one fsync and one whole fsync of its own, and
    N concurrent callers cost about two fsyncs, not N. A failed fsync raises OSError in every
    caller it was for. After a fork the child starts afresh (a parent's round in flight never
    ends in the child).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._running: _Round | None = None  # the fsync in flight
        self._queued: _Round | None = None  # the next one, for callers that came during it

    def sync(self) -> None:
        """Return once an fsync of the directory that began after this call has succeeded;
        OSError (errno and text of the failed fsync) when it failed."""
        if self._pid != os.getpid():
            self._start()
        cond = self._cond
        with cond:
            if self._running is None:  # lead at once, taking along any callers still waking up
                mine = self._running = self._queued or _Round()
                self._queued = None
            else:
                mine = self._queued = self._queued or _Round()
                while not mine.done and self._running is not None:
                    cond.wait()
                if not mine.done:  # the last round ended: whoever wakes first starts ours
                    self._running, self._queued = mine, None
        if not mine.done:
            # Not synced unless fsync returns (an exception of another kind fails the round too).
            error: OSError | None = OSError(errno.EIO, "directory fsync did not complete")
            try:
                fsync_dir(self.path)
                error = None
            except OSError as exc:
                error = exc
            finally:  # whatever happens, the round ends, so no caller waits for it forever
                with cond:
                    mine.done, mine.error = True, error
                    self._running = None
                    cond.notify_all()
        if mine.error is not None:
            # A fresh exception per caller: one instance raised in several threads would share
            # (and overwrite) its traceback.
            raise OSError(mine.error.errno, mine.error.strerror, str(self.path))


class _Round:
    """One fsync of a DirSync and its outcome."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: OSError | None = None


# --- which filesystem a path is on ------------------------------------------------------------

MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystem types (as /proc/self/mountinfo names them) served by one kernel's page cache: every
# process that can open a file on them runs on that kernel, so a write(2) is visible to all of
# them as soon as it returns, fsync'd or not, and a crash of that kernel ends all of them at
# once. Network, cluster and FUSE filesystems (NFS, EFS, SMB, bucket mounts, 9p, virtiofs, GFS2)
# and any type not named here are treated as shared between hosts.
ONE_KERNEL_FILESYSTEMS = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "bcachefs", "jfs", "reiserfs", "nilfs2",
    "tmpfs", "ramfs", "overlay", "vfat", "exfat", "ntfs3", "hfsplus",
})


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written as octal escapes."""
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, char)
    return field


def filesystem_type(path: str, mountinfo: str) -> str | None:
    """The type of the filesystem `path` (absolute, symlinks resolved) is on, from the text of a
    /proc/<pid>/mountinfo (proc(5)): the mount with the longest mount point containing `path`,
    the later one when several are stacked there. None when no line applies."""
    found: tuple[int, str] | None = None
    # Lines end at "\n" only: the kernel escapes nothing else, so a mount point may hold \x0b, \x1c,
    # \u2028 and the like, which str.splitlines() would take for line ends.
    for line in mountinfo.split("\n"):
        parts = line.split(" ")
        if "-" not in parts or len(parts) < 5:
            continue
        mount_point = _unescape(parts[4])
        fstype = parts[parts.index("-") + 1] if parts.index("-") + 1 < len(parts) else ""
        inside = mount_point == "/" or path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and (found is None or len(mount_point) >= found[0]):
            found = (len(mount_point), fstype)
    return found[1] if found else None



def one_kernel(path: Path, mountinfo: Path | None = None) -> bool:
    """Whether `path` (created or not) is on a filesystem of ONE_KERNEL_FILESYSTEMS, by the mount
    with the longest mount point containing it (symbolic links resolved) in `mountinfo` (default
    MOUNTINFO). False when that cannot be told (no readable mountinfo: not Linux), so callers
    fall back to what shared filesystems need."""
    try:
        text = (mountinfo or MOUNTINFO).read_text(errors="replace")
    except OSError:
        return False
    return filesystem_type(os.path.realpath(path), text) in ONE_KERNEL_FILESYSTEMS


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
