"""Recording every filesystem call a piece of code makes, from any thread: Python's audit events
(open, listdir, scandir, remove, rename, mkdir, chmod, ...) and the os calls that raise none
(stat, lstat, statvfs, access). For tests that prove an input never reaches the filesystem."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

_recording: list[list[tuple[str, str]]] = []
_lock = threading.Lock()
_installed = False
_QUIET = ("stat", "lstat", "statvfs", "access")


def _path_of(args: tuple[Any, ...]) -> str | None:
    for arg in args:
        if isinstance(arg, str | bytes | os.PathLike):
            return os.fsdecode(arg)
    return None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _recording or not (event == "open" or event.startswith(("os.", "shutil."))):
        return
    path = _path_of(args)
    if path is not None:
        with _lock:
            for calls in _recording:
                calls.append((event, path))


@contextmanager
def filesystem_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """A list filled with (call, path) for every filesystem call made while the block runs."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)  # audit hooks cannot be removed: one, inactive outside the block
        _installed = True
    calls: list[tuple[str, str]] = []
    for name in _QUIET:
        real = getattr(os, name)

        def recorded(path: Any, *args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            with _lock:
                for found in _recording:
                    found.append((f"os.{_name}", str(path) if isinstance(path, int) else os.fsdecode(path)))
            return _real(path, *args, **kw)

        monkeypatch.setattr(os, name, recorded)
    _recording.append(calls)
    try:
        yield calls
    finally:
        _recording.remove(calls)  # the patched os calls stay until the test ends, recording nothing
