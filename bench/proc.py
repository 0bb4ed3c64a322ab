"""What /proc says about the servers under test: CPU seconds of a process group, resident memory of
its processes, and the whole machine's busy time. Linux only; elsewhere the figures are n/a."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available() -> bool:
    return Path("/proc/stat").exists()


def proc_stats() -> list[tuple[int, int, int, float]]:
    """(pid, parent pid, process group, CPU seconds: user + system) of every process."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        out.append((int(entry.name), int(fields[1]), int(fields[2]),
                    (int(fields[11]) + int(fields[12])) / _TICK))
    return out


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the living processes of a process group (a server's session)."""
    return sum(seconds for _, _, group, seconds in proc_stats() if group == pgid)


def group_rss_kib(pgid: int) -> dict[int, int]:
    """Resident memory (KiB) of each process of the group but its leader: the workers."""
    out = {}
    for pid, _, group, _ in proc_stats():
        if group != pgid or pid == pgid:
            continue
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[pid] = int(line.split()[1])
        except OSError:
            continue
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / _TICK
