"""The machine the bench runs on: CPU pinning, the fd limit, and what to report about it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import shutil
import subprocess
import sys

PROXY_CPUS = "0"
"""CPU list (``taskset -c``) of the process being measured: the proxy."""
LOAD_CPUS = "1"
"""CPU list of the load generator, the upstream echo server and the bench itself."""
ALL_CPUS = "0,1"
"""CPU list of every process in the scaling scenario (two workers need both cores)."""

PACKAGES = (
    "asgi-ws-gateway", "uvicorn", "websockets", "uvloop", "httptools", "picows", "asgiproxy",
    "fastapi-proxy-lib", "aiohttp", "httpx", "httpx-ws", "starlette", "fastapi",
)  # fmt: skip


def raise_fd_limit(wanted: int = 20_000) -> int:
    """Raise the soft open-file limit towards ``wanted`` (capped by the hard limit); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def pin_self(cpus: str) -> None:
    """Pin this process (the bench orchestrator) to ``cpus``."""
    if pinning_available():
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def pinning_available() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cpus: str, argv: list[str]) -> list[str]:
    """``argv`` prefixed with ``taskset -c cpus`` when pinning is possible (2+ cores and taskset)."""
    return ["taskset", "-c", cpus, *argv] if pinning_available() else argv


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def nginx_version() -> str | None:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        return None
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ").removeprefix("nginx/")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    """What the results were measured on: CPU, cores, kernel, Python, package versions."""
    versions: dict[str, str | None] = {name: _version(name) for name in PACKAGES}
    versions["nginx"] = nginx_version()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "pinning": pinning_available(),
        "proxy_cpus": PROXY_CPUS,
        "load_cpus": LOAD_CPUS,
        "fd_soft_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "versions": versions,
    }


__all__ = [
    "ALL_CPUS",
    "LOAD_CPUS",
    "PROXY_CPUS",
    "machine_info",
    "nginx_version",
    "pin_self",
    "pinned",
    "pinning_available",
    "raise_fd_limit",
]
