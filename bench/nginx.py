"""nginx as a WebSocket reverse proxy, started by the bench with its own prefix and config.

One worker, 64 KiB proxy buffers (``proxy_buffer_size``: the buffer nginx copies an upgraded
connection through), access log off, read/send timeouts long enough for the idle scenario. Not a
system service: ``nginx -p PREFIX -c nginx.conf -g 'daemon off;'`` in the foreground.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CONFIG = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections {connections};
    multi_accept on;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;

    upstream echo {{
        server 127.0.0.1:{upstream_port};
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """The nginx executable (Debian's ``/usr/sbin/nginx`` is not on every PATH), or None."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def write_config(prefix: Path, *, port: int, upstream_port: int, nofile: int) -> Path:
    """Write ``prefix/nginx.conf`` for a proxy on ``port`` to the echo upstream; return its path."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)  # nginx opens its default error log here before reading the config
    path = prefix / "nginx.conf"
    path.write_text(
        CONFIG.format(
            prefix=prefix, port=port, upstream_port=upstream_port, nofile=nofile, connections=max(1024, nofile - 100)
        )
    )
    return path


def nginx_argv(prefix: Path, config: Path) -> list[str]:
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (scripts/install-nginx.sh)")
    return [binary, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"]


__all__ = ["nginx_argv", "nginx_binary", "write_config"]
