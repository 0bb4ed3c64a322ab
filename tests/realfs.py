"""Run a Service under conditions a test process cannot give itself, for real.

Tests run as root, and root writes through any permission bits, so `chmod` cannot make a folder
unwritable for it. Two real conditions instead, each in a child process:

- `read_only=[...]`: the folders are bind-mounted read-only in a private mount namespace
  (`unshare -m`), which refuses writes to root too (EROFS), and vanishes with the child;
- `user="nobody"`: the child drops to an unprivileged user (`setpriv`), for whom permission bits
  hold. When the tests do not run as root, the child simply runs as the current user.

The child (`python -m tests.realfs <spec.json>`) builds a Service from the spec's settings, sends
its requests through `Service.hec` and prints what it saw as JSON: each reply, `healthz`, the stored
documents and the DLQ file names.

When the system forbids read-only mounts (no CAP_SYS_ADMIN, e.g. an unprivileged container), the
tests that need one are skipped with the reason, except under CI (`CI` set), where they fail.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEC_TOKEN = "11111111-2222-4333-8444-555555555555"
_MOUNT_RO = 'for d in "$@"; do [ "$d" = -- ] && break; mount --bind "$d" "$d" && ' \
            'mount -o remount,bind,ro "$d" || exit 97; done; while [ "$1" != -- ]; do shift; done; ' \
            'shift; exec "$@"'


def require(reason: str | None) -> None:
    """Skip with `reason` (fail under CI) when a real condition cannot be made here."""
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to run this test: {reason}")
    pytest.skip(reason)


@functools.cache
def read_only_mounts() -> str | None:
    """None when a child can mount a folder read-only here, else why not."""
    with tempfile.TemporaryDirectory() as probe:
        try:
            done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", _MOUNT_RO,
                                   "sh", probe, "--", "sh", "-c", f"! touch {probe}/x 2>/dev/null"],
                                  capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare is not usable: {exc}"
    if done.returncode != 0:
        return f"read-only bind mounts are not allowed here: {done.stderr.decode(errors='replace')[:200]}"
    return None


def unprivileged_uid() -> tuple[int, int]:
    """The uid and gid a child runs as when it must not be root: nobody's, or ours when not root."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    user = pwd.getpwnam("nobody")
    return user.pw_uid, user.pw_gid


def shared_tmp() -> Path:
    """A folder every user can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="telhawk-realfs-"))
    path.chmod(0o755)
    return path


def settings_for(home: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "hec": {"tokens": [{"name": "test", "token": HEC_TOKEN}]},
        "dlq": {"base_path": str(home / "dlq"), "min_free_bytes": 0},
        "storage": {"backend": "local", "data_dir": str(home / "data")},
        "core": {"max_retries": 0},  # the child runs in real time: no backoff waits
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return data


def run(settings: dict[str, Any], requests: Sequence[tuple[str, str]], *,
        read_only: Sequence[Path] = (), as_user: bool = False) -> dict[str, Any]:
    """Run the child; `requests` are (path, body) pairs, a GET when the body is None."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump({"settings": settings, "requests": requests}, spec)
    os.chmod(spec.name, 0o644)
    command: list[str] = [sys.executable, "-m", "tests.realfs", spec.name]
    if read_only:
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c", _MOUNT_RO, "sh",
                   *map(str, read_only), "--", *command]
    if as_user and os.geteuid() == 0:
        uid, gid = unprivileged_uid()
        command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=120)
    finally:
        os.unlink(spec.name)
    if done.returncode != 0:
        raise AssertionError(f"child failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return json.loads(done.stdout.splitlines()[-1])


def _child(spec_path: str) -> None:
    from telhawk_ingest.config import Settings
    from telhawk_ingest.hec import HecRequest
    from telhawk_ingest.service import Service
    from telhawk_ingest.storage.local import LocalBackend

    spec = json.loads(Path(spec_path).read_text())
    settings = Settings.model_validate(spec["settings"])
    service = Service(settings)
    replies = []
    for path, body in spec["requests"]:
        request = HecRequest(method="GET" if body is None else "POST", path=path,
                             headers={"Authorization": f"Splunk {HEC_TOKEN}"},
                             body=(body or "").encode())
        reply = service.hec(request)
        replies.append({"status": reply.status, "body": reply.body, "headers": reply.headers})
    try:
        stored = [d["_id"] for d in LocalBackend(settings.storage.data_dir).documents()]
    except OSError as exc:
        stored = [f"unreadable: {exc}"]
    out = {
        "replies": replies,
        "healthz": service.healthz(),
        "stored": stored,
        "dlq_files": sorted(p.name for p in settings.dlq.base_path.glob("failed_*.json")),
    }
    service.backend.close()
    print(json.dumps(out))


if __name__ == "__main__":
    _child(sys.argv[1])
