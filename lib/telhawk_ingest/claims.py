"""Claims on DLQ entries: at most one replay works on an entry at a time (SPEC §11).

A replay holds its claims through a holder file, `<dlq.base_path>/.claims/.holder-<host>-<pid>-
<random>`, created once per batch. Claiming an entry is a hard link of that file to the entry's
name, `.claims/<entry id>`: link(2) fails with EEXIST when the name exists, so of two processes
(or instances sharing the volume) claiming one entry at once exactly one succeeds and the other
skips the entry. Every claim of a holder is the holder file's inode, so a claim name tells whose
it is (its inode and mtime: an inode number can be reused once freed) and since when (the holder
file's mtime, written when it was created and never changed).

This is the lock-file technique open(2) recommends over O_EXCL for NFS: link is atomic on the
server, and when the reply to a link is lost and the client's retry answers EEXIST, the name's
inode still shows the claim was ours. It needs no lock manager, which NFS and bucket-backed
mounts do not provide reliably (the reason the DLQ uses no file locks at all), and it costs no
inode per claim (on a busy disk, creating an inode took 25 times as long as a link).

A claim left by a replay that was killed is released once it is older than
`replay.claim_timeout_seconds` (the holder file's mtime, set by the file server, against this
process's clock: the timeout must exceed the clock skew between hosts). Breaking a claim is a
rename of the claim name to a unique aside name, then a check that what was moved is the claim
judged stale (same inode): when another process broke it and claimed the entry in between, the
fresh claim is linked back (link fails rather than replace a claim taken meanwhile). A holder
checks that a claim is still its own (`Holder.holds`) before acting on an entry once half the
timeout has passed, so only a replay that ran past the timeout can lose an entry to a second
one; storage is idempotent by `_id` (SPEC §6), so even then nothing is stored twice.

Claims are not fsync'd: a host that loses them in a power cut has lost the replay holding them.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .dlq import ID_RE
from .files import NEW, private_dir

log = logging.getLogger(__name__)

CLAIMS_DIR = ".claims"
HOLDER_PREFIX = ".holder-"
_ASIDE = ".broken-"


class Claims:
    """The claims directory of one DLQ. Any number of processes may share it.

    `timeout_s`: seconds after which a claim counts as left by a killed replay. `clock`: unix
    seconds now (injected in tests), compared with holder files' mtimes.
    """

    def __init__(self, dlq_path: Path, timeout_s: float, clock: Callable[[], float] = time.time) -> None:
        self.path = dlq_path / CLAIMS_DIR
        self.dir = str(self.path)  # joined as strings: pathlib cost more than the system calls
        self.timeout_s = timeout_s
        self.clock = clock
        self._host = socket.gethostname()[:64].replace("/", "_")

    def holder(self) -> Holder:
        """A new holder (its file created); use it as a context manager, which releases every
        claim still held and removes the file. Raises OSError when the directory is unusable."""
        name = f"{HOLDER_PREFIX}{self._host}-{os.getpid()}-{uuid.uuid4().hex}"
        path = os.path.join(self.dir, name)
        try:
            fd = os.open(path, NEW, 0o600)
        except FileNotFoundError:
            private_dir(self.path)
            fd = os.open(path, NEW, 0o600)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return Holder(self, path, _identity(st), self.clock())

    def release_stale(self) -> list[str]:
        """Break every claim older than the timeout (left by replays that were killed), and
        remove the holder files and aside names such replays left; returns the entry ids freed."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        released = []
        for name in names:
            if ID_RE.fullmatch(name):
                if self.break_if_stale(name):
                    released.append(name)
            elif (name.startswith(HOLDER_PREFIX) or _ASIDE in name) and self._stale(name) is not None:
                _unlink(os.path.join(self.dir, name))
        if released:
            log.warning("released %d DLQ claims older than %g s, left by replays that stopped",
                        len(released), self.timeout_s)
        return released

    def _stale(self, name: str) -> os.stat_result | None:
        """The name's stat when it is older than the timeout; None when younger or gone."""
        try:
            st = os.lstat(os.path.join(self.dir, name))
        except FileNotFoundError:
            return None
        return st if self.clock() - st.st_mtime > self.timeout_s else None

    def break_if_stale(self, entry_id: str) -> bool:
        """Remove the claim on `entry_id` if it is older than the timeout; True when the name is
        free now (broken here, or gone already), False when a live claim holds it."""
        claim = os.path.join(self.dir, entry_id)
        stale = self._stale(entry_id)
        if stale is None:
            return not os.path.lexists(claim)
        aside = f"{claim}{_ASIDE}{uuid.uuid4().hex}"
        try:
            os.rename(claim, aside)
        except FileNotFoundError:
            return True  # released or broken by someone else meanwhile
        if _identity(os.lstat(aside)) != _identity(stale):
            # Broken and claimed again by another replay between the check and the rename: that
            # claim is live. Put it back unless yet another claim has taken the name since.
            try:
                os.link(aside, claim)
            except FileExistsError:
                log.warning("DLQ claim on %s was taken over while being released", entry_id)
            os.unlink(aside)
            return False
        os.unlink(aside)
        log.info("released the claim on DLQ entry %s, older than %g s", entry_id, self.timeout_s)
        return True


class Holder:
    """One replay's claims (module docstring): `claim`, `holds`, `release`; leaving the `with`
    block releases the rest and removes the holder file."""

    def __init__(self, claims: Claims, path: str, identity: tuple[int, int], at: float) -> None:
        self._claims = claims
        self._path = path
        self._identity = identity
        self._at = at
        self._held: set[str] = set()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def claim(self, entry_id: str) -> bool:
        """Claim an entry; False when another replay holds a live claim on it. A stale claim
        (older than the timeout) is broken first."""
        name = f"{self._claims.dir}/{entry_id}"
        for _ in range(2):
            try:
                os.link(self._path, name)
            except FileExistsError:
                if self._owns(name):  # a retried link whose first try succeeded (NFS)
                    break
                if not self._claims.break_if_stale(entry_id):
                    return False
                continue
            break
        else:
            return False
        self._held.add(entry_id)
        return True

    def holds(self, entry_id: str) -> bool:
        """Whether the claim on the entry is still this holder's (not broken as stale and taken
        again). Younger than half the timeout it cannot have been broken (with clocks less than
        that apart), so only then is the name looked at."""
        if entry_id not in self._held:
            return False
        if self._claims.clock() - self._at < self._claims.timeout_s / 2:
            return True
        return self._owns(os.path.join(self._claims.dir, entry_id))

    def release(self, entry_id: str) -> None:
        """Give the claim back. One that was broken meanwhile is left to its new holder."""
        if self.holds(entry_id):
            _unlink(f"{self._claims.dir}/{entry_id}")
        self._held.discard(entry_id)

    def close(self) -> None:
        for entry_id in list(self._held):
            self.release(entry_id)
        _unlink(self._path)

    def _owns(self, name: str) -> bool:
        try:
            return _identity(os.lstat(name)) == self._identity
        except FileNotFoundError:
            return False


def _identity(st: os.stat_result) -> tuple[int, int]:
    """Whose claim a name is: its inode, and its mtime in nanoseconds, since an inode number
    freed (a stale holder's file removed) may be given to the next file created; that file's
    mtime is another."""
    return st.st_ino, st.st_mtime_ns


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
