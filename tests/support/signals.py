"""One real ``asgi-ws-gateway run`` exporting its metrics to a real OTLP receiver, and what it left: the lines
the process wrote and the metric points the receiver got. Usage::

    result = SignalsRun()
    with signals_run(tmp, config, result, arguments=["--management", "/_gateway"]) as server:
        asyncio.run(clients(server.port))
        assert server.stop() == 0
    assert result.value("ws_gateway.handshakes", ws_gateway__api__name="plain") == 1
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support.otlp import OtlpReceiver, Point
from support.processes import SRC, ServerProcess, ready_server

__all__ = ["SignalsRun", "exporting_to", "signals_run"]


@dataclass
class SignalsRun:
    """The process's output and the receiver's points; a module's scenario subclasses it for what its clients saw."""

    output: str = ""
    points: list[Point] = field(default_factory=list)

    def latest(self, metric: str) -> list[dict[str, Any]]:
        """The last value of each series of ``metric``: its attributes, with ``_value`` (a histogram: its count)."""
        last: dict[frozenset[tuple[str, Any]], dict[str, Any]] = {}
        for p in self.points:
            if p.metric == metric:
                value = p.count if p.kind == "histogram" else p.value
                last[frozenset(p.attributes.items())] = {**p.attributes, "_value": value}
        return list(last.values())

    def value(self, metric: str, **attributes: Any) -> float:
        """The sum of the latest values of the series of ``metric`` with these attributes (dots as ``__``)."""
        wanted = {k.replace("__", "."): v for k, v in attributes.items()}
        return float(sum(s["_value"] for s in self.latest(metric) if all(s.get(k) == v for k, v in wanted.items())))


def exporting_to(otlp: OtlpReceiver) -> dict[str, str]:
    """The environment that sends a gateway's metrics to ``otlp`` over gRPC every 200 ms, and no traces."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint("grpc"), "OTEL_METRIC_EXPORT_INTERVAL": "200",
            "OTEL_TRACES_EXPORTER": "none"}  # fmt: skip


@contextlib.contextmanager
def signals_run(
    cwd: Path, config: dict[str, Any], result: SignalsRun, *, arguments: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:  # fmt: skip
    """``asgi-ws-gateway run`` of ``config`` (written to ``cwd``/gateway.yaml, logging at INFO, modules in ``cwd``
    importable), exporting to a receiver of its own. The body runs the clients and stops the server; then
    ``result`` gets the output and, the server stopped (its last export sent), the points."""
    with OtlpReceiver() as otlp:
        (cwd / "gateway.yaml").write_text(yaml.safe_dump(config))
        full_env = {**exporting_to(otlp), "PYTHONPATH": os.pathsep.join([str(cwd), str(SRC)]), **(env or {})}
        command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "info", *arguments]
        with ready_server(lambda port: [*command, "--port", str(port)], cwd=cwd, env=full_env) as server:
            yield server
            result.output = server.output()
        result.points = otlp.points()
