"""Claims on DLQ entries: at most one replay works on an entry at a time (SPEC §11).

A claim is a small file `<dlq.base_path>/.claims/<entry id>` created with O_CREAT | O_EXCL: of
two processes (or instances sharing the volume) claiming one entry at once, exactly one creates
it, the other gets EEXIST and skips the entry. The file holds a token unique to the claim (host,
process, random part), so a holder can tell its claim from a later one under the same name.

Exclusive create is atomic on local filesystems and on NFS from version 3 on (NFSv4.1 for Amazon
EFS), where the server decides; so is rename. Neither needs a lock manager, which NFS and
bucket-backed mounts do not provide reliably (the reason the DLQ uses no file locks at all).

A claim left by a replay that was killed is released once it is older than
`replay.claim_timeout_seconds` (its file's mtime, set by the file server, against this process's
clock: the timeout must exceed the clock skew between hosts). Breaking a claim is a rename of the
claim file to a unique aside name, then a check that what was moved is the claim that was judged
stale: when another process broke it and claimed the entry in between, the fresh claim is linked
back (link(2) fails rather than replace a claim taken meanwhile). A holder checks that its claim is
still its own (`Claims.holds`) before acting on an entry, so only a replay that ran past the
timeout can lose an entry to a second one; storage is idempotent by `_id` (SPEC §6), so even
then nothing is stored twice.

Claims are not fsync'd: a host that loses them in a power cut has lost the replay holding them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .dlq import ID_RE
from .files import private_dir, read_regular, write_all

log = logging.getLogger(__name__)

CLAIMS_DIR = ".claims"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A claim file holds one token: host name (up to 64), process id, 32 hex digits.
_MAX_CLAIM_BYTES = 256
_ASIDE = ".broken-"


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim held on one entry: its id and the token written in its file."""

    entry_id: str
    token: bytes


class Claims:
    """The claims directory of one DLQ. Thread-safe (every operation is one or two system calls
    on distinct names); any number of processes may share it.

    `timeout_s`: seconds after which a claim counts as left by a killed replay. `clock`: unix
    seconds now (injected in tests), compared with claim files' mtimes.
    """

    def __init__(self, dlq_path: Path, timeout_s: float, clock: Callable[[], float] = time.time) -> None:
        self.path = dlq_path / CLAIMS_DIR
        self.timeout_s = timeout_s
        self._clock = clock
        self._prefix = f"{socket.gethostname()[:64]}:{os.getpid()}:".encode()

    def claim(self, entry_id: str) -> Claim | None:
        """Claim an entry; None when another replay holds a live claim on it. A stale claim
        (older than the timeout) is broken first. Raises OSError when the directory is unusable."""
        token = self._prefix + uuid.uuid4().hex.encode()
        for _ in range(2):
            try:
                fd = os.open(self.path / entry_id, _CREATE, 0o600)
            except FileNotFoundError:
                private_dir(self.path)
                continue
            except FileExistsError:
                if not self._break_if_stale(entry_id):
                    return None
                continue
            try:
                write_all(fd, token)
            finally:
                os.close(fd)
            return Claim(entry_id, token)
        return None

    def holds(self, claim: Claim) -> bool:
        """Whether the claim's file is still this claim (not broken as stale and taken again)."""
        return self._token(claim.entry_id) == claim.token

    def release(self, claim: Claim) -> None:
        """Give the claim back. One that was broken meanwhile is left to its new holder."""
        if not self.holds(claim):
            return
        try:
            os.unlink(self.path / claim.entry_id)
        except FileNotFoundError:
            pass

    def release_stale(self) -> list[str]:
        """Break every claim older than the timeout (left by replays that were killed), and
        remove aside files a breaker killed midway left; returns the entry ids released."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        released = []
        for name in names:
            if ID_RE.fullmatch(name):
                if self._break_if_stale(name):
                    released.append(name)
            elif _ASIDE in name and self._older_than_timeout(name):
                try:
                    os.unlink(self.path / name)
                except FileNotFoundError:
                    pass
        if released:
            log.warning("released %d DLQ claims older than %g s, left by replays that stopped",
                        len(released), self.timeout_s)
        return released

    def _older_than_timeout(self, name: str) -> bool:
        try:
            return self._clock() - os.lstat(self.path / name).st_mtime > self.timeout_s
        except FileNotFoundError:
            return False

    def _token(self, name: str) -> bytes | None:
        try:
            return read_regular(self.path / name, _MAX_CLAIM_BYTES)
        except OSError:
            return None

    def _break_if_stale(self, entry_id: str) -> bool:
        """Remove the claim on `entry_id` if it is older than the timeout; True when the name is
        free now (broken here, or gone already), False when a live claim holds it."""
        if not self._older_than_timeout(entry_id):
            return not os.path.lexists(self.path / entry_id)
        stale = self._token(entry_id)
        aside = self.path / f"{entry_id}{_ASIDE}{uuid.uuid4().hex}"
        try:
            os.rename(self.path / entry_id, aside)
        except FileNotFoundError:
            return True  # released or broken by someone else meanwhile
        moved = self._token(aside.name)
        if moved != stale:
            # Broken and claimed again by another replay between the check and the rename: that
            # claim is live. Put it back unless yet another claim has taken the name since.
            try:
                os.link(aside, self.path / entry_id)
            except FileExistsError:
                log.warning("DLQ claim on %s was taken over while being released", entry_id)
            os.unlink(aside)
            return False
        os.unlink(aside)
        log.info("released the claim on DLQ entry %s, older than %g s", entry_id, self.timeout_s)
        return True
