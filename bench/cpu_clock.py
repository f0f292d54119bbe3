"""Another process's CPU time to the nanosecond, read from its POSIX CPU-time clock.

psutil (like ``/proc/PID/stat``) counts CPU time in clock ticks, 10 ms on Linux. The test suite's
smoke run measures 0.06 s windows in which a proxy uses 5-30 ms, so a tick-based reading was 0, 1, 2
or 3 ticks: under the suite's load, 0 (a proxy that served thousands of echoes for nothing) in about
1 scaling sample of 3 (2026-12-06). A process's CPU-time clock (``clock_getcpuclockid``) is the
scheduler's own run time of all its threads, those that ended included.
"""

from __future__ import annotations

import ctypes
import time

_libc = ctypes.CDLL(None, use_errno=True)
_getcpuclockid = getattr(_libc, "clock_getcpuclockid", None)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` has used, to the nanosecond; None when its clock cannot
    be read (the process is gone, or the C library has no ``clock_getcpuclockid``)."""
    if _getcpuclockid is None:
        return None
    clock = ctypes.c_int()
    if _getcpuclockid(pid, ctypes.byref(clock)) != 0:  # it returns the error number (ESRCH: no such process)
        return None
    try:
        return time.clock_gettime(clock.value)
    except OSError:  # gone since
        return None


__all__ = ["process_cpu_seconds"]
