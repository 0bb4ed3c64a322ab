"""Folding many small per-process files into one, on a shared volume, without locks.

The counters (stats.py) and the audit log (audit.py) keep one file per process, so processes never
write to the same file. On a serverless platform every cold start adds such a file; this module
holds the steps both use to fold the files of processes gone quiet into one file, safely when
any number of processes on any number of hosts fold at once (NFS and bucket mounts make file
locks unreliable, so there are none):

1. claim: rename `<name>` to `<name>.claim-<folder id>`. A rename is atomic; of several folders
   racing for one file exactly one wins, the others get ENOENT and leave it.
2. write the folded file to a temp name, fsync, and rename it into place (the commit), recording
   inside it the original names it absorbed.
3. delete the claimed files.

A reader that sees a folded file skips every file whose original name it records, so a file is
counted once whether the reader looked before, during or after a fold. A folder that stopped
before its commit leaves claims: any later fold takes them over once CLAIM_STALE_S old (checking
first whether a committed file already records them, which it deletes instead). A folder that
stopped between claiming and committing for longer than COMMIT_BUDGET_S gives its claims back
instead of committing, so a takeover and a late commit never both count a file; only a stop of
more than CLAIM_STALE_S - COMMIT_BUDGET_S between that check and the commit's one rename (two
system calls) could. Not here: what the files hold.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Container, Iterable
from pathlib import Path

from .files import fsync_dir, write_synced

CLAIM_MARK = ".claim-"
TEMP_PREFIX = ".tmp-"
# A claim this old (by its rename time, ctime) belongs to a folder that stopped: others take it over.
CLAIM_STALE_S = 1800.0
# A folder whose claims are older than this when it is about to commit gives them back instead.
COMMIT_BUDGET_S = 60.0


def original(name: str) -> str:
    """The name a file had before it was claimed (`a.counters.claim-x1` -> `a.counters`)."""
    head, mark, _ = name.partition(CLAIM_MARK)
    return head if mark else name


def is_claim(name: str) -> bool:
    return CLAIM_MARK in name


def folder_id() -> str:
    return uuid.uuid4().hex[:12]


def claim(directory: Path, name: str, fid: str) -> Path | None:
    """Claim `name` (a plain or already claimed name) for folder `fid`; None when another got it."""
    target = directory / f"{original(name)}{CLAIM_MARK}{fid}"
    try:
        os.rename(directory / name, target)
    except FileNotFoundError:
        return None
    return target


def release(directory: Path, claimed: Iterable[Path]) -> None:
    """Give claimed files back their original names (a fold that will not commit)."""
    for path in claimed:
        try:
            os.rename(path, directory / original(path.name))
        except OSError:
            continue  # taken over by another fold meanwhile


def claim_is_stale(ctime: float, now: float) -> bool:
    return now - ctime >= CLAIM_STALE_S


def left_by_a_stopped_fold(path: Path, ctime: float, now: float, committed: Container[str]) -> bool:
    """For a claimed name (`is_claim`) with status-change time `ctime`: True when a fold claimed it
    and stopped before committing (the caller folds it now). False when another fold is still at
    work on it (claimed less than CLAIM_STALE_S before `now`), or when a commit already recorded
    its original name in `committed`: the fold stopped before cleaning up, and the leftover claim
    is removed here."""
    if not claim_is_stale(ctime, now):
        return False
    if original(path.name) in committed:
        path.unlink(missing_ok=True)
        return False
    return True


def commit(directory: Path, final_name: str, data: bytes, claimed: list[Path], started: float) -> bool:
    """Write `data` as `final_name` (temp, fsync, rename, fsync of the directory), then delete the
    claimed files. When more than COMMIT_BUDGET_S passed since `started` (wall clock, as claims
    are judged by other hosts), the claims are given back and nothing is written: False."""
    tmp = directory / f"{TEMP_PREFIX}{final_name}"
    write_synced(tmp, data)
    if time.time() - started > COMMIT_BUDGET_S:
        tmp.unlink(missing_ok=True)
        release(directory, claimed)
        return False
    os.rename(tmp, directory / final_name)
    fsync_dir(directory)
    for path in claimed:
        path.unlink(missing_ok=True)
    fsync_dir(directory)
    return True


def remove_stale_temp_files(directory: Path, now: float) -> None:
    """Temp files of folders that stopped before their commit."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX):
            try:
                if claim_is_stale(entry.stat().st_mtime, now):
                    os.unlink(entry.path)
            except OSError:
                continue


def unique_name(prefix: str, suffix: str) -> str:
    """`<prefix><time-ordered hex><suffix>`: sorts by creation, unique across hosts."""
    return f"{prefix}{time.time_ns():016x}-{uuid.uuid4().hex[:8]}{suffix}"
