"""Child processes of tests and benchmarks: stop one politely, read its CPU time and memory from /proc."""

from __future__ import annotations

import os
import subprocess

__all__ = ["proc_cpu_s", "proc_mem_mb", "stop_process"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen, timeout: float = 10, kill_wait: float | None = 5) -> None:
    """SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL (and up to ``kill_wait`` seconds to
    be reaped; None: do not wait). A process that has exited already is left alone."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        if kill_wait is not None:
            proc.wait(kill_wait)


def proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (all its threads); 0 when it is gone (or no pid)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_s(pid: int | None) -> float:
    """``proc_cpu_s`` of a process and all its live descendants (a server started with ``--processes N``)."""
    if pid is None:
        return 0.0
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += proc_cpu_s(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return total


def proc_mem_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) in MB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return out
