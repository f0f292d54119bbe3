"""Highly available Redis for tests: a real 3+3 Cluster and a real Sentinel set, on free ports.

Each set runs private ``redis-server`` processes in a temporary directory (nothing saved to disk)
and kills them on ``stop()``; the machine's Redis on 6379 is never touched. Timeouts are low
(``node_timeout`` / ``down_after`` in ms) so that failover tests fail over in a second or two.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["PortTaken", "RedisClusterSet", "RedisSentinelSet", "cluster_ports", "free_ports", "ha_available"]


def ha_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_EPHEMERAL_LOW = _ephemeral_low()
"""Ports are drawn below the kernel's ephemeral range: a port another test binds with port 0, or an
outgoing connection's local port, never lands there between choosing a port and redis binding it."""


class PortTaken(RuntimeError):
    """A redis-server exited at start: its port was taken after it was chosen (the set starts again)."""


def free_ports(count: int) -> list[int]:
    """Free ports below the ephemeral range."""
    return _ports(count, _EPHEMERAL_LOW, ())


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) is free and below the ephemeral range too."""
    return _ports(count, _EPHEMERAL_LOW - 10000, (10000,))


def _ports(count: int, below: int, offsets: tuple[int, ...]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(10000, below)
        if port not in ports and all(_bindable(p) for p in (port, *(port + o for o in offsets))):
            ports.append(port)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cli(port: int, *args: str, timeout: float = 10.0) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout, check=False
    ).stdout


def _wait(condition: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {condition}")
        time.sleep(0.05)


def _field(text: str, name: str) -> str:
    """``name``'s value in INFO's ``name:value`` lines or a replica line's ``name=value`` pairs."""
    found = re.search(rf"(?:^|[\n,:]){name}[:=](\w+)", text)
    if found is None:
        raise RuntimeError(f"no {name} in {text!r}")
    return found.group(1)


class _Processes:
    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="redis-ha-")
        self.dir = Path(self._dir.name)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, port: int, *args: str, sentinel: Path | None = None) -> None:
        workdir = self.dir / str(port)
        workdir.mkdir(exist_ok=True)
        # repl-diskless-sync-delay 0: a replica syncs at once (default 5 s), and one never synced cannot fail over
        common = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--repl-diskless-sync-delay", "0"]  # fmt: skip
        argv = [str(sentinel), "--sentinel"] if sentinel is not None else [*common, *args]
        self.processes[port] = subprocess.Popen(
            ["redis-server", *argv],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ping(self, ports: list[int], timeout: float = 10.0) -> None:
        for port in ports:
            _wait(f"redis-server on {port}", lambda port=port: self._pong(port), timeout)

    def _pong(self, port: int) -> bool:
        if self.processes[port].poll() is not None:
            raise PortTaken(f"redis-server on {port} exited at start")
        return _cli(port, "PING").strip() == "PONG"

    def kill(self, port: int) -> None:
        """SIGKILL: the node vanishes without a goodbye, like a crashed host."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(5)

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
        self._dir.cleanup()


class _ServerSet:
    """Private redis-server processes, killed on ``stop()`` (also when ``start()`` fails)."""

    _procs: _Processes

    def start(self) -> None:
        raise NotImplementedError

    def kill(self, port: int) -> None:
        self._procs.kill(port)

    def stop(self) -> None:
        self._procs.stop()

    def choose_ports(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for attempt in range(3):
            try:
                self.start()
            except BaseException as exc:
                self.stop()
                if not isinstance(exc, PortTaken) or attempt == 2:
                    raise
                self._procs = _Processes()
                self.choose_ports()  # taken meanwhile by another test worker's server: other ports
            else:
                return self
        raise AssertionError("unreachable")  # the last attempt returned or raised

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RedisClusterSet(_ServerSet):
    """3 masters + 3 replicas created with ``redis-cli --cluster create``; ``url`` is ``redis+cluster://``."""

    def __init__(self, *, node_timeout_ms: int = 1000) -> None:
        self.choose_ports()
        self.node_timeout_ms = node_timeout_ms
        self._procs = _Processes()

    def choose_ports(self) -> None:
        self.ports = cluster_ports(6)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:3])

    def start(self) -> None:
        for port in self.ports:
            self._procs.spawn(
                port,
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
            )  # fmt: skip
        self._procs.wait_ping(self.ports)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        self.wait_ok(timeout=30)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node says ``cluster_state:ok`` and knows 3 masters; every replica has synced."""

        def ok() -> bool:
            for port in self.ports:
                if port not in self._procs.processes:
                    continue
                info = _cli(port, "CLUSTER", "INFO")
                if "cluster_state:ok" not in info or "cluster_size:3" not in info:
                    return False
                replication = _cli(port, "INFO", "replication")
                if "role:slave" in replication and "master_link_status:up" not in replication:
                    return False
            return True

        _wait("cluster_state:ok", ok, timeout)

    def masters(self) -> list[int]:
        """Ports of the live masters, as the cluster sees them now."""
        live = next(port for port in self.ports if port in self._procs.processes)
        lines = _cli(live, "CLUSTER", "NODES").splitlines()
        return [
            int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
            for line in lines
            if "master" in line.split()[2] and "fail" not in line.split()[2]
        ]

    def wait_replicated(self, master: int, timeout: float = 10.0) -> None:
        """Every replica of ``master`` holds what it wrote so far: replication is asynchronous, so a
        write just acknowledged may be lost with a killed master unless this is awaited first."""
        info = _cli(master, "INFO", "replication")
        written = int(_field(info, "master_repl_offset"))
        replicas = [int(_field(line, "port")) for line in info.splitlines() if line.startswith("slave")]
        if not replicas:
            raise RuntimeError(f"master {master} has no replica")

        def caught_up() -> bool:
            offsets = [int(_field(_cli(port, "INFO", "replication"), "slave_repl_offset")) for port in replicas]
            return min(offsets) >= written

        _wait(f"the replicas of {master} to reach offset {written}", caught_up, timeout)

    def master_for(self, key: str) -> int:
        slot = int(_cli(self.ports[0], "CLUSTER", "KEYSLOT", key).strip())
        for port in self.masters():
            for line in _cli(port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for span in fields[8:]:
                        low, _, high = span.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return port
        raise RuntimeError(f"no master serves slot {slot}")


class RedisSentinelSet(_ServerSet):
    """1 master, 1 replica, 3 sentinels watching ``service``; ``url`` is ``redis+sentinel://``."""

    def __init__(self, *, service: str = "gw", down_after_ms: int = 1000) -> None:
        self.choose_ports()
        self.service = service
        self.down_after_ms = down_after_ms
        self._procs = _Processes()

    def choose_ports(self) -> None:
        self.master_port, self.replica_port, *self.sentinel_ports = free_ports(5)

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports) + f"/{self.service}"

    def start(self) -> None:
        self._procs.spawn(self.master_port)
        self._procs.spawn(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        self._procs.wait_ping([self.master_port, self.replica_port])
        for port in self.sentinel_ports:
            conf = self._procs.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self._procs.dir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} 10000\n"
            )
            self._procs.spawn(port, sentinel=conf)
        self._procs.wait_ping(self.sentinel_ports)
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every sentinel knows the replica and the two other sentinels: a failover can be agreed."""

        def ready() -> bool:
            for port in self.sentinel_ports:
                master = _cli(port, "SENTINEL", "MASTER", self.service)
                if "num-slaves\n1" not in master or "num-other-sentinels\n2" not in master:
                    return False
            return "master_link_status:up" in _cli(self.replica_port, "INFO", "replication")

        _wait("sentinels ready", ready, timeout)

    def current_master(self) -> int:
        reply = _cli(self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service).split()
        return int(reply[1])
