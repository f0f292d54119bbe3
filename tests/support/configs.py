"""The one builder of gateway configurations for the tests, and writing one to a file.

``build_config()`` is a configuration document (a dict, as a YAML file or ``WebSocketGateway(config=...)``
takes it) with one API; keyword arguments override the API's fields (``api=``) or add top-level
sections (``telemetry=...``, ``policies=...``). ``api_entry()`` is one entry of ``apis``, for
documents with more than one API (``more_apis=``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from support.upstream import UpstreamServer

__all__ = ["UNUSED_UPSTREAM", "api_entry", "build_config", "write_config"]

UNUSED_UPSTREAM = "ws://127.0.0.1:9/"
"""An upstream for configurations no connection goes through (port 9, discard: nothing listens)."""


def api_entry(
    upstream: UpstreamServer | str = UNUSED_UPSTREAM, *, name: str = "echo", path: str = "/ws/echo", **fields: Any
) -> dict[str, Any]:
    """One entry of ``apis``: ``name`` at ``path`` to ``upstream`` (a scripted upstream: its ``/echo``)."""
    url = upstream.url("/echo") if isinstance(upstream, UpstreamServer) else upstream
    return {"name": name, "path": path, "upstreams": [url], **fields}


def build_config(
    upstream: UpstreamServer | str = UNUSED_UPSTREAM,
    *,
    name: str = "echo",
    path: str = "/ws/echo",
    api: Mapping[str, Any] | None = None,
    more_apis: Sequence[Mapping[str, Any]] = (),
    **top: Any,
) -> dict[str, Any]:
    """A configuration with the API :func:`api_entry` builds (``api`` its extra fields), then ``more_apis``.

    ``top`` are top-level sections: ``build_config(upstream, telemetry={"access_log": "json"})``.
    """
    return {"apis": [api_entry(upstream, name=name, path=path, **(api or {})), *map(dict, more_apis)], **top}


def write_config(directory: Path, document: Mapping[str, Any], name: str = "gateway.yaml") -> Path:
    """Write ``document`` to ``directory/name``, as JSON if ``name`` ends in ``.json``, else YAML."""
    path = directory / name
    path.write_text(json.dumps(document) if name.endswith(".json") else yaml.safe_dump(dict(document)))
    return path
