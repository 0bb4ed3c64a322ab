"""What one HEC request can cost: peak memory at the body limit, and the time of adversarial requests.

Each case runs in a fresh Python process (so `ru_maxrss` is that request's own peak), through
`Service.hec` with the default settings (10 MiB body limit, 100,000 events per request,
decompression ratio 100, local storage and DLQ in a temp folder), after one small warm-up
request. The process builds the body, notes its peak RSS, answers the one request, and reports
the answer, its wall time and how much the peak RSS grew: memory the request needed on top of
its body. Cases:

- at the body limit, taken: ~10 MiB of ~1 KB OCSF events (stored), ~10 MiB of sshd lines to the
  raw endpoint (stored), one JSON event of 10 MiB of tiny values (`[{},{},...]`, the costliest
  JSON to decode; dead-lettered) and one raw line of 10 MiB of control bytes (dead-lettered:
  JSON escapes each as six bytes in its DLQ record);
- past the events cap: 10 MiB of `a\\n` (5.2 million raw lines) and of `{"event":"x"}` objects;
- gzip: 10 MiB of `a\\n` and of `\\x01` gzipped (~10 KB each, past the ratio), 2 and 10 MiB of
  empty 20-byte members (past the member cap), and 10,000 members of one sshd event each (taken);
- DLQ files: the issue's 70 KB of 5,000 `{"event":"x"}` objects (no normalizer: 5,000 fsync'd DLQ
  files), with the time per file, to scale to the events cap.

Figures are printed, never judged on time.
"""

from __future__ import annotations

import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import events
from .common import Context, say, table

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
LIMIT = 10 * MiB
CASE_TIMEOUT_S = 600
SSHD = (ROOT / "tests" / "events" / "sshd.log").read_text().splitlines()[0]

Case = Callable[[], tuple[str, dict[str, str], bytes]]


def _json_ocsf() -> tuple[str, dict[str, str], bytes]:
    one = json.dumps(events.ocsf_objects(1)[0]).encode() + b"\n"
    objects = events.ocsf_objects(LIMIT // len(one) - 10)
    return "/services/collector/event", {}, b"\n".join(json.dumps(o).encode() for o in objects)


def _raw_sshd() -> tuple[str, dict[str, str], bytes]:
    line = SSHD.encode() + b"\n"
    return "/services/collector/raw?sourcetype=linux_secure", {}, line * min(LIMIT // len(line), 100_000)


def _json_tiny_values() -> tuple[str, dict[str, str], bytes]:
    return "/services/collector/event", {}, b'{"event": [' + b"{}," * (LIMIT // 3 - 10) + b"{}]}"


def _raw_control_bytes() -> tuple[str, dict[str, str], bytes]:
    return "/services/collector/raw", {}, b"\x01" * (LIMIT - 1)


def _raw_a_lines() -> tuple[str, dict[str, str], bytes]:
    return "/services/collector/raw", {}, b"a\n" * (LIMIT // 2)


def _json_x_events() -> tuple[str, dict[str, str], bytes]:
    return "/services/collector/event", {}, b'{"event":"x"}\n' * (LIMIT // 14)


def _gzipped(path: str, plain: bytes) -> tuple[str, dict[str, str], bytes]:
    return path, {"Content-Encoding": "gzip"}, gzip.compress(plain)


def _empty_members(size: int) -> Case:
    return lambda: ("/services/collector/event", {"Content-Encoding": "gzip"},
                    gzip.compress(b"") * (size // 20))


def _event_members() -> tuple[str, dict[str, str], bytes]:
    member = gzip.compress(json.dumps({"event": SSHD, "sourcetype": "linux_secure"}).encode() + b"\n")
    return "/services/collector/event", {"Content-Encoding": "gzip"}, member * 10_000


def _dlq_files() -> tuple[str, dict[str, str], bytes]:
    return "/services/collector/event", {}, b'{"event":"x"}' * 5000


CASES: dict[str, tuple[str, Case]] = {
    "json_ocsf": ("10 MiB of OCSF events (stored)", _json_ocsf),
    "raw_sshd": ("10 MiB of sshd lines, raw (stored)", _raw_sshd),
    "json_tiny_values": ("10 MiB JSON event of [{},{},...] (DLQ)", _json_tiny_values),
    "raw_control_bytes": ("10 MiB raw line of \\x01 (DLQ)", _raw_control_bytes),
    "raw_a_lines": ("10 MiB of 'a\\n', raw (events cap)", _raw_a_lines),
    "json_x_events": ('10 MiB of {"event":"x"} (events cap)', _json_x_events),
    "gzip_a_lines": ("gzip of 10 MiB 'a\\n' (ratio)",
                     lambda: _gzipped("/services/collector/raw", _raw_a_lines()[2])),
    "gzip_control_bytes": ("gzip of 10 MiB \\x01 (ratio)",
                           lambda: _gzipped("/services/collector/raw", _raw_control_bytes()[2])),
    "gzip_empty_2mib": ("2 MiB of empty gzip members (member cap)", _empty_members(2 * MiB)),
    "gzip_empty_10mib": ("10 MiB of empty gzip members (member cap)", _empty_members(LIMIT - 100)),
    "gzip_10000_members": ("10,000 gzip members of one event (stored)", _event_members),
    "dlq_5000_files": ('70 KB of 5,000 {"event":"x"} (5,000 DLQ files)', _dlq_files),
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(name: str, path: str, headers: dict[str, str], body_file: str) -> dict[str, object]:
    """Answer one request whose body is in `body_file` in this process and return its figures."""
    from telhawk_ingest.config import Settings
    from telhawk_ingest.hec import HecRequest
    from telhawk_ingest.service import Service

    token = "00000000-0000-4000-8000-00000000abcd"
    with tempfile.TemporaryDirectory(prefix="telhawk-bench-abuse-") as home:
        settings = Settings.model_validate({
            "hec": {"tokens": [{"name": "bench", "token": token}]},
            "dlq": {"base_path": f"{home}/dlq", "min_free_bytes": 0},
            "storage": {"backend": "local", "data_dir": f"{home}/data"},
        })
        service = Service(settings)
        auth = {"Authorization": f"Splunk {token}"}
        warm = json.dumps({"event": SSHD, "sourcetype": "linux_secure"}).encode()
        service.hec(HecRequest("POST", "/services/collector/event", auth, body=warm))
        path, _, query = path.partition("?")
        params = dict(part.split("=", 1) for part in query.split("&") if part)
        # Read, not built here: building a body can peak higher than the request itself.
        body = Path(body_file).read_bytes()
        request = HecRequest("POST", path, {**auth, **headers}, params, body)
        before = _peak_mib()
        started = time.perf_counter()
        reply = service.hec(request)
        seconds = time.perf_counter() - started
        grown = _peak_mib() - before
        dlq_files = list(Path(f"{home}/dlq").glob("failed_*.json"))
        largest = max((p.stat().st_size for p in dlq_files), default=0)
        service.backend.close()
    return {"case": name, "status": reply.status, "code": reply.body.get("code"),
            "detail": reply.body.get("detail", ""), "seconds": seconds, "rss_mib": grown,
            "body_bytes": len(body), "dlq_files": len(dlq_files), "largest_dlq_file": largest}


def _measure(name: str, case: Case) -> dict[str, object]:
    """Run one case in a fresh process, its body handed over in a temp file."""
    path, headers, body = case()
    with tempfile.NamedTemporaryFile(prefix="telhawk-bench-body-") as body_file:
        body_file.write(body)
        body_file.flush()
        del body
        done = subprocess.run([sys.executable, "-m", "bench.abuse", name, path, json.dumps(headers),
                               body_file.name], cwd=ROOT, capture_output=True, text=True,
                              timeout=CASE_TIMEOUT_S, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(ctx: Context) -> None:
    say("abuse: one request per fresh process through Service.hec, default limits "
        "(10 MiB body, 100,000 events, ratio 100, 10,000 gzip members)")
    rows = []
    for name, (label, case) in CASES.items():
        try:
            result = _measure(name, case)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            say(f"  {name}: failed: {exc}")
            continue
        answer = f"{result['status']} code {result['code']}"
        mib = result["rss_mib"]
        largest = result["largest_dlq_file"]
        rows.append([label, f"{result['body_bytes']:,}", answer, f"{result['seconds']:.3f} s",
                     f"{mib:.0f} MiB", f"{mib * MiB / LIMIT:.1f}x",
                     f"{result['dlq_files']:,}" + (f" ({largest / MiB:.1f} MiB)" if largest > MiB else "")])
        ctx.add(f"abuse: {label}", f"{answer}, {result['seconds']:.2f} s, +{mib:.0f} MiB")
        if name == "dlq_5000_files" and result["dlq_files"]:
            per_file = result["seconds"] / result["dlq_files"]
            say(f"  DLQ files: {per_file * 1000:.2f} ms each; at the events cap (100,000) one request "
                f"would take about {per_file * 100_000:.0f} s")
    say(table(rows, ["case", "body bytes", "answer", "time", "peak RSS +", "x limit", "DLQ files"]))


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])))
