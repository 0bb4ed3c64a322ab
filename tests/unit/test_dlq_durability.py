"""A dead letter is on disk, under its final name, before the DLQ says it is written (SPEC §2).

Told by file identity (inode), not by names, so any way of getting a synced file to its final
name (rename, replace, link) passes, and any order that could lose it after a power cut fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue, make_record


class DiskEvents:
    """Records fsync (which inode) and every name change (which inode got which name), in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, int, str]] = []
        real_fsync, real_rename, real_replace, real_link = os.fsync, os.rename, os.replace, os.link

        def fsync(fd: int) -> None:
            real_fsync(fd)
            self.events.append(("fsync", os.fstat(fd).st_ino, os.readlink(f"/proc/self/fd/{fd}")))

        def named(real):
            def change(src: os.PathLike[str] | str, dst: os.PathLike[str] | str, *args, **kwargs):
                inode = os.stat(src).st_ino
                result = real(src, dst, *args, **kwargs)
                self.events.append(("name", inode, os.fspath(dst)))
                return result
            return change

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", named(real_rename))
        monkeypatch.setattr(os, "replace", named(real_replace))
        monkeypatch.setattr(os, "link", named(real_link))

    def index(self, kind: str, inode: int, after: int = -1) -> int:
        """Position of the first `kind` event for `inode` after position `after`; -1 if none."""
        for i, (k, ino, _) in enumerate(self.events):
            if i > after and k == kind and ino == inode:
                return i
        return -1


def record(n: int) -> dict:
    envelope = {"id": f"id-{n}", "source": "s", "source_type": "t", "format": "raw", "payload": f"line {n}",
                "attributes": {}, "received_at": ""}
    return make_record(envelope, "normalization_failed", "no normalizer", now=1_700_000_000.0 + n)


def test_each_dead_letter_is_fsynced_before_its_final_name_and_the_names_before_the_answer(tmp_path,
                                                                                           monkeypatch):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    disk = DiskEvents(monkeypatch)

    ids = dlq.write_many([record(1), record(2), record(3)])

    directory = (tmp_path / "dlq").stat().st_ino
    last_name = -1
    for entry_id in ids:
        final = tmp_path / "dlq" / f"{entry_id}.json"
        inode = final.stat().st_ino
        named = max(i for i, (k, ino, path) in enumerate(disk.events) if k == "name" and path == str(final))
        synced = disk.index("fsync", inode)
        assert 0 <= synced < named, f"{final.name} got its final name before its data was fsynced"
        last_name = max(last_name, named)
    assert disk.index("fsync", directory, after=last_name) > last_name, "no directory fsync after the renames"


def test_a_single_dead_letter_is_as_durable_as_a_batch(tmp_path, monkeypatch):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    disk = DiskEvents(monkeypatch)

    entry_id = dlq.write(record(1))

    final: Path = tmp_path / "dlq" / f"{entry_id}.json"
    [named] = [i for i, (k, _, path) in enumerate(disk.events) if k == "name" and path == str(final)]
    assert 0 <= disk.index("fsync", final.stat().st_ino) < named
    assert disk.index("fsync", (tmp_path / "dlq").stat().st_ino, after=named) > named
