"""The ``asgi-ws-gateway`` command line.

Exit codes: 0 success (``run``: also after a graceful shutdown on SIGTERM/SIGINT), 1 the command
failed at run time, 2 usage or configuration error, 3 not found, 4 unauthorized, 5 conflict,
6 (``connect``) closed abnormally, 7 (``run``) could not start serving (bind failed, start-up failed),
8 (``run``) forced to stop (a second SIGINT) before the drain finished, or (``connections list``)
incomplete: some workers did not answer.
"""

from __future__ import annotations

import argparse
import configparser
import datetime
import io
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError
from .forwarded import UNIX_SOCKET_PEER, is_loopback_host
from .json_names import load_unique
from .key_files import readable_by_every_user
from .loading import MAX_PATH, ChainNotLoaded, alias_problem, load_cert_chain, read_regular_file
from .management import cli as management_cli
from .management.cli import MANAGEMENT_HOST, REDIS_ENV
from .management.mount_path import MAX_MANAGEMENT_PATH
from .plugins import MAX_MODULE, MAX_PLUGINS
from .redact import printable
from .socket_access import DEFAULT_UDS_MODE, replaceable_by_others, writable_by_others
from .yaml_keys import safe_load

if TYPE_CHECKING:
    from .config.gateway import GatewayConfig
    from .config.settings import HandshakeLimitsConfig

# The gateway itself (pydantic, OpenTelemetry, Redis, the relay) is imported by the commands that
# need it: run, check and schema. The management commands and --help start in a third of the time.
# uvicorn and the server, the OpenTelemetry SDK and the management API are run's alone: check and
# schema read a configuration without them (tests/test_cli_imports.py). asyncio and websockets are the
# commands' that connect: --help and a usage error parse arguments alone.

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
"""uvicorn's log levels (``uvicorn.config.LOG_LEVELS``, the same order), named here: uvicorn is imported by ``run``."""
DEFAULT_WS = "asgi_ws_gateway.server:GatewayWebSocketProtocol"
"""``run --ws``'s default: not imported to be checked (the workers import it to serve; ``--workers N``'s supervisor
serves with none, and imported the protocols, the relay and the gateway for it: docs/performance.md, "Start-up")."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asgi-ws-gateway",
        description="WebSocket API gateway: run, check and describe configurations; manage a running gateway.",
        epilog="Exit codes: 0 success (run: also after a graceful shutdown), 1 failed, 2 usage or invalid input, "
        "3 not found, 4 unauthorized, 5 conflict, 6 (connect) closed abnormally, "
        "7 (run) could not start serving: bind or start-up failed, "
        "8 (run) forced to stop (a second Ctrl+C) before the drain finished, "
        "or (connections list) incomplete: some workers did not answer.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve a configuration file under uvicorn")
    run.add_argument("config", type=_file_path, help="YAML or JSON configuration file")
    run.add_argument("--host", type=_host, help=f"bind address (default: {DEFAULT_HOST})")
    run.add_argument("--port", type=_port, help=f"port, 0 for any free one (default: {DEFAULT_PORT})")
    run.add_argument(
        "--uds", metavar="PATH", type=_file_path,
        help="listen on this Unix socket instead of --host and --port (a proxy on this host in front: list 'unix:' "
        "in the config's trusted_proxies so that its X-Forwarded-For names the client)",
    )  # fmt: skip
    run.add_argument(
        "--uds-mode", metavar="MODE", type=_uds_mode,
        help="the --uds socket's permissions, octal: who may connect (write permission), e.g. 660 for the owner "
        f"and its group, the proxy's (default: {DEFAULT_UDS_MODE:o})",
    )  # fmt: skip
    run.add_argument(
        "--workers", type=_workers, default=1, help="uvicorn worker processes, at most 8 per CPU (default: %(default)s)"
    )
    run.add_argument(
        "--timeout-worker-healthcheck", metavar="SECONDS", type=_healthcheck_timeout, default=5,
        help="with --workers 2 or more: seconds a started worker has to answer the supervisor's health check before "
        f"it is replaced as hung, 1 to {MAX_HEALTHCHECK_TIMEOUT} (default: %(default)s, uvicorn's)",
    )  # fmt: skip
    run.add_argument(
        "--ws",
        type=_ws_protocol,
        default=DEFAULT_WS,
        help="uvicorn WebSocket implementation: a uvicorn name or module:attribute (default: %(default)s)",
    )
    run.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="(default: %(default)s)")
    run.add_argument(
        "--access-log-format", choices=("text", "json"),
        help="format of the gateway's access log, one line per connection (default: $ASGI_WS_GATEWAY_ACCESS_LOG, "
        "else the config's telemetry.access_log)",
    )  # fmt: skip
    run.add_argument("--no-access-log", action="store_true", help="write no access log (the gateway's nor uvicorn's)")
    run.add_argument(
        "--log-config", metavar="FILE", type=_log_config,
        help="logging configuration instead of the default: dictConfig .json/.yaml, or fileConfig .ini",
    )  # fmt: skip
    tls = run.add_argument_group(f"TLS: serve wss:// and https:// (a key's password from ${TLS_PASSWORD_ENV})")
    tls.add_argument(
        "--ssl-certfile", metavar="FILE", type=_file_path, help="certificate chain (PEM), the server's first"
    )
    tls.add_argument(
        "--ssl-keyfile", metavar="FILE", type=_file_path,
        help="its private key (PEM; default: the one in --ssl-certfile)",
    )  # fmt: skip
    managed = run.add_argument_group("management API (admin token from $ASGI_WS_GATEWAY_ADMIN_TOKEN)")
    managed.add_argument(
        "--management", metavar="PATH", type=_management_path,
        help="serve the management API at this path, e.g. /_gateway (no API may live under it)",
    )  # fmt: skip
    managed.add_argument("--management-port", metavar="PORT", type=_own_port, help="or on its own port (at its root)")
    managed.add_argument(
        "--management-host", metavar="ADDRESS", type=_host,
        help=f"the address --management-port listens on, not --host's (default: {MANAGEMENT_HOST}, loopback: private)",
    )  # fmt: skip
    managed.add_argument(
        "--state",
        metavar="FILE",
        type=_file_path,
        help="file keeping API changes (default: CONFIG's stem + .state.json)",
    )
    managed.add_argument(
        "--redis",
        metavar="URL",
        type=_redis_url,
        default=None,  # ${REDIS_ENV} when not given: read after parsing (main), so its problems name it
        help="with --management or --management-port: keep the API changes in Redis and reach every worker and "
        "host through it (limits are shared by the config's store: {type: redis}): redis://host:port/db, "
        f"redis+cluster://host:port,... or redis+sentinel://host:port,.../service[/db] (default: ${REDIS_ENV}, "
        "which keeps a password out of the command line, where ps shows it)",
    )
    managed.add_argument(
        "--redis-prefix", type=_redis_prefix, default="asgi-ws-gw",
        help=f"Redis key namespace: letters, digits and _.:-, at most {MAX_PREFIX} (default: %(default)s)",
    )  # fmt: skip

    check = commands.add_parser("check", help="validate a configuration file and list every problem")
    check.add_argument("config", type=_file_path)
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    schema = commands.add_parser("schema", help="print the JSON Schema of configuration files")
    for command in (run, check, schema):
        command.add_argument("--plugin", metavar="MODULE", action="append", default=[], type=_plugin,
                             help=f"import MODULE first: it registers custom policy types (repeatable, at most "
                                  f"{MAX_PLUGINS} times)")  # fmt: skip
    management_cli.add_commands(commands)

    _working_directory_on_import_path()
    args = parser.parse_args(argv)
    if args.command == "run":
        from .server.other_signals import hangup_ignored_while_starting

        hangup_ignored_while_starting()  # as it reads its file, until the server (or supervisor) takes SIGHUP over
    if len(getattr(args, "plugin", ())) > MAX_PLUGINS:  # what the configuration's plugins takes
        parser.error(f"--plugin: at most {MAX_PLUGINS} modules")
    if args.command == "run" and args.redis is None and os.environ.get(REDIS_ENV):
        try:
            args.redis = _redis_url(os.environ[REDIS_ENV])
        except argparse.ArgumentTypeError as exc:  # names the variable, not a flag that was not given
            print(f"error: ${REDIS_ENV}: {exc}", file=sys.stderr)
            return 2
        args.redis_from_env = True
    elif args.command == "run" and args.redis is not None:
        _warn_credentials_in_argv(args.redis)
    if args.command not in ("run", "check", "schema"):
        return management_cli.run(args)
    return _configured(args)


def _configured(args: argparse.Namespace) -> int:
    """``run``, ``check`` or ``schema``: the configuration file (and plugins) read and checked first."""
    from .config.checks import config_warnings
    from .plugins import load_plugins
    from .policies.build import load_policies
    from .schema import json_schema
    from .state.memory import MemoryState

    try:
        load_plugins(args.plugin, field="--plugin")
        if args.command == "schema":
            print(json.dumps(json_schema(), indent=2))
            return 0
        # Built to be checked (with a memory store: nothing connects, nothing is fetched), then dropped.
        policies = load_policies(args.config, store=lambda config: MemoryState())
        config = policies.config
        if args.command == "run":  # what each worker would find wrong in its environment, said once, before serving
            from .server.serving import client_message_limit, graceful_shutdown_timeout  # uvicorn, the server, ...
            from .standalone import access_log_problems, collector_problems
            from .startup import variable_problems
            from .telemetry.providers import environment_config_problems

            args.shutdown_timeout = graceful_shutdown_timeout(config)
            args.ws_max_size, args.ws_max_size_from = client_message_limit(config)
            args.unix_trusted = UNIX_SOCKET_PEER in config.trusted_proxies  # warned of on an open --uds socket
            args.config_access_log = config.telemetry.access_log  # the format when no flag or variable names one
            args.head_bytes = _request_head_bytes(config.handshake_limits)
            flagged = args.no_access_log or args.access_log_format  # the flags replace the variable
            environment = [*variable_problems(), *environment_config_problems(config.telemetry),
                           *collector_problems(), *([] if flagged else access_log_problems())]  # fmt: skip
            if environment:
                raise ConfigError(environment, "environment")
            if (refused := _store_database_refusal(config)) is not None:
                raise ConfigError([refused], args.config)
    except ConfigError as exc:
        if args.command == "check" and args.json:
            print(json.dumps({"valid": False, "problems": exc.problems}))
        else:
            print(exc, file=sys.stderr)
        return 2
    readable = _secrets_every_user_reads(args.config)
    if args.command == "check":
        names = [api.name for api in config.apis]
        warnings = [*config_warnings(config), *policies.warnings, *readable]
        if args.json:
            print(json.dumps({"valid": True, "apis": names, "warnings": warnings}))
        else:
            print(f"{args.config}: valid, {len(names)} API(s): {', '.join(names) or '-'}")
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
        return 0
    for warning in readable:  # said once, by the command: the workers read the file again
        print(f"warning: {warning}", file=sys.stderr)
    return _run(args)


def _secrets_every_user_reads(path: str) -> list[str]:
    """The configuration file's problem when it holds a secret (an HMAC ``secret``, a password in a URL: what
    ``GET /config`` shows as REDACTED) and every local user can read it: any of them could forge tokens or
    reach the store with it. One warning; the file's text is never quoted."""
    from .config.files import read_file
    from .management.disclosure import public_document

    problem = readable_by_every_user(path)
    if problem is None:
        return []
    try:
        data = read_file(Path(path))
    except ConfigError:
        return []
    if public_document(data) == data:
        return []
    shown = printable(path, quote=False)
    return [f"{shown} holds secrets and can be read by every user of this host ({problem}): chmod 600 "
            "(or 640 with a group only the gateway's user is in), or give them as *_env settings"]  # fmt: skip


def _store_database_refusal(config: GatewayConfig) -> str | None:
    """``store.url``'s problem when its server refuses the database the URL names, asked once before serving:
    each worker would otherwise count nothing (every Redis call failed, every limit unchecked)."""
    store = config.store
    if store.type != "redis" or not store.url:
        return None
    import asyncio  # run's alone: --help and usage errors start without an event loop

    from .redis_client import database_refusal

    answer = asyncio.run(database_refusal(store.url, min(store.timeout, 5.0)))
    if answer is None:
        return None
    return (f"store.url: the Redis server refuses the URL's database ({answer}): it has as many as its "
            "'databases' setting (16 by default); use an index below it")  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from .plugins import PLUGINS_ENV
    from .server.serving import EXIT_START_FAILED, STARTUP_FAILURE, serve
    from .server.unix_socket import SocketPathUnusable
    from .standalone import ACCESS_LOG_ENV, CONFIG_ENV, GC_ENV

    if args.uds is not None and (args.host is not None or args.port is not None):
        print("error: --uds listens on a Unix socket instead of --host and --port: give one or the other",
              file=sys.stderr)  # fmt: skip
        return 2
    args.host = DEFAULT_HOST if args.host is None else args.host
    args.port = DEFAULT_PORT if args.port is None else args.port

    os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    os.environ[PLUGINS_ENV] = ",".join(args.plugin)  # each worker imports them again
    os.environ.setdefault(GC_ENV, "tuned")  # the gateway is each worker's whole application
    if not (args.no_access_log or args.access_log_format):  # the operator's variable (checked), as the flags
        # It was dropped without a word: the access log stayed on, in the config's format.
        access = os.environ.get(ACCESS_LOG_ENV)
        args.no_access_log, args.access_log_format = access == "off", access if access in ("text", "json") else None
    access = "off" if args.no_access_log else args.access_log_format
    if access:
        os.environ[ACCESS_LOG_ENV] = access
    else:
        os.environ.pop(ACCESS_LOG_ENV, None)
    if args.management_port is not None and args.uds is None and args.management_port == args.port:
        # Both sockets would bind (SO_REUSEADDR): every request would then count as the management port's.
        print("error: --management-port must differ from --port (the management API would answer on the "
              "public port, in place of the gateway)", file=sys.stderr)  # fmt: skip
        return 2
    if args.management_host is not None and args.management_port is None:
        print("error: --management-host needs --management-port (a --management path is served on --host's "
              "port)", file=sys.stderr)  # fmt: skip
        return 2
    if args.redis and not (args.management or args.management_port):
        # Without the management API nothing would use it: a gateway run expecting its limits shared
        # would count them per process, without a word. The flag is an error; the variable (exported
        # for the management commands too, perhaps shell-wide) a warning.
        given = not getattr(args, "redis_from_env", False)
        print(f"{'error' if given else 'warning'}: --redis (or ${REDIS_ENV}) is the management API's store and bus "
              "and needs --management or --management-port; to share limits, quotas and leases between workers "
              "and hosts, set store: {type: redis, url: ...} in the configuration", file=sys.stderr)  # fmt: skip
        if given:
            return 2
    if (problem := _tls_problem(args)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.ssl_certfile is not None and (warning := _certificate_warning(args.ssl_certfile)) is not None:
        print(f"warning: --ssl-certfile: {warning}", file=sys.stderr)
    _size_request_heads(args.head_bytes)
    if args.management or args.management_port:
        from .management.admin_auth import MAKE_TOKEN, SHORT_TOKEN, admin_token_problem, weak_token_problem

        if not os.environ.get(management_cli.TOKEN_ENV):
            print(f"error: the management API needs an admin token: set {management_cli.TOKEN_ENV}", file=sys.stderr)
            return 2
        if (problem := admin_token_problem(os.environ[management_cli.TOKEN_ENV])) is not None:
            print(f"error: {management_cli.TOKEN_ENV}: {problem}", file=sys.stderr)
            return 2
        # A --management path on a Unix socket is as far as the proxy in front of it reaches: not loopback.
        listening = (args.management_host or MANAGEMENT_HOST) if args.management_port else args.uds or args.host
        weak = weak_token_problem(os.environ[management_cli.TOKEN_ENV])
        if weak is not None and not is_loopback_host(listening):
            print(f"error: {management_cli.TOKEN_ENV}: {weak}, and the management API would listen on {listening}, "
                  f"beyond this host: use {SHORT_TOKEN} or more random characters ({MAKE_TOKEN})",
                  file=sys.stderr)  # fmt: skip
            return 2
        _set_management_env(args)
        app = "asgi_ws_gateway.server.serving:managed_app"
    else:
        app = "asgi_ws_gateway.server.serving:standalone_app"
    if args.uds is None and args.uds_mode is not None:
        print("error: --uds-mode is the mode of --uds's socket: give --uds", file=sys.stderr)
        return 2
    try:
        return serve(
            app,
            _uvicorn_options(args),
            management_port=args.management_port,
            management_host=args.management_host or MANAGEMENT_HOST,
            uds_mode=DEFAULT_UDS_MODE if args.uds_mode is None else args.uds_mode,
            unix_trusted=getattr(args, "unix_trusted", False),
            message_limit_from=getattr(args, "ws_max_size_from", None),
        )
    except SocketPathUnusable as unusable:
        print(f"error: --uds {args.uds}: {unusable.problem}", file=sys.stderr)
        return EXIT_START_FAILED
    except ConfigError as exc:  # raised while the app is built, in this process (one worker)
        print(exc, file=sys.stderr)
        return 2
    except SystemExit as exc:  # uvicorn exits 3 on a failed bind: our 3 means "not found"
        if exc.code == STARTUP_FAILURE:
            return EXIT_START_FAILED
        raise


TLS_PASSWORD_ENV = "ASGI_WS_GATEWAY_SSL_KEYFILE_PASSWORD"
"""The password of ``--ssl-keyfile``: an environment variable, as ``ps`` shows a command line."""


def _tls_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``run``'s TLS options, found by loading the certificate and key once here:
    a worker that cannot would exit with uvicorn's traceback, each time its supervisor restarts it."""
    if args.ssl_certfile is None:
        return "--ssl-keyfile needs --ssl-certfile" if args.ssl_keyfile is not None else None
    import ssl

    password = os.environ.get(TLS_PASSWORD_ENV, "")  # "" when unset: an encrypted key fails as a wrong password
    try:
        load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), args.ssl_certfile, args.ssl_keyfile, password,
                        limit=MAX_TLS_FILE_BYTES)  # fmt: skip
    except ChainNotLoaded as failure:
        if failure.read_error is not None:  # a FIFO, a device or a huge file: as the configuration file is judged
            flag = "--ssl-certfile" if failure.path == args.ssl_certfile else "--ssl-keyfile"
            return f"{flag}: {failure.path}: {failure.read_error.strerror or failure.read_error}"
        error = failure.error  # not PEM, a key that does not match, a wrong password
        reason = getattr(error, "reason", None) or str(error)
        return (f"--ssl-certfile/--ssl-keyfile: no usable certificate and key ({reason}); an encrypted key's "
                f"password comes from ${TLS_PASSWORD_ENV}")  # fmt: skip
    return None


def _certificate_warning(certfile: str, now: datetime.datetime | None = None) -> str | None:
    """What an operator should hear of the server's certificate (the chain's first): expired, not valid
    yet, or expiring within :data:`CERTIFICATE_WARNING_DAYS`. Served all the same (a test, a renewal on
    its way), but every client refuses an expired one, and without a word the first to know is a user."""
    from cryptography import x509

    try:
        certificate = x509.load_pem_x509_certificate(read_regular_file(certfile, MAX_TLS_FILE_BYTES))
    except ValueError:  # loaded by OpenSSL already: a form this parser reads otherwise
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    if hasattr(certificate, "not_valid_after_utc"):  # cryptography 42 and later
        after, before = certificate.not_valid_after_utc, certificate.not_valid_before_utc
    else:  # naive datetimes in UTC
        after = certificate.not_valid_after.replace(tzinfo=datetime.UTC)
        before = certificate.not_valid_before.replace(tzinfo=datetime.UTC)
    if after <= now:
        return f"the certificate expired at {after:%Y-%m-%d %H:%M} UTC: clients will refuse it"
    if before > now:
        return f"the certificate is not valid before {before:%Y-%m-%d %H:%M} UTC: clients will refuse it until then"
    if after - now <= datetime.timedelta(days=CERTIFICATE_WARNING_DAYS):
        return f"the certificate expires at {after:%Y-%m-%d %H:%M} UTC, in {(after - now).days} day(s)"
    return None


CERTIFICATE_WARNING_DAYS = 14
"""``run`` warns of a certificate expiring within this many days."""
MAX_TLS_FILE_BYTES = 1024 * 1024
"""A certificate chain or key file, at most (a long chain is a few kilobytes)."""


def _request_head_bytes(limits: HandshakeLimitsConfig) -> int:
    """The request head ``run``'s server reads for ``limits``: a handshake they admit (its target, its
    headers as they count them, the request line's own bytes), 64 KiB at least, 1 MiB at most."""
    from .server.head_deadline import DEFAULT_MAX_HEAD_BYTES, MAX_MAX_HEAD_BYTES

    admitted = limits.max_target_bytes + limits.max_header_bytes + _REQUEST_LINE_ROOM
    return min(max(DEFAULT_MAX_HEAD_BYTES, admitted), MAX_MAX_HEAD_BYTES)


_REQUEST_LINE_ROOM = 1024
"""Bytes of a request head beyond its target and headers: ``GET``, ``HTTP/1.1``, the line ends."""


def _size_request_heads(head_bytes: int) -> None:
    """Let the server read the request heads the configuration admits, unless the operator's
    ``$ASGI_WS_GATEWAY_MAX_HEAD_BYTES`` says otherwise: raised ``handshake_limits`` were a 431 from the
    server before the gateway saw the request (its 64 KiB came from the variable alone)."""
    from .server.head_deadline import DEFAULT_MAX_HEAD_BYTES, MAX_HEAD_BYTES_ENV, HeadDeadline

    if os.environ.get(MAX_HEAD_BYTES_ENV) or head_bytes <= DEFAULT_MAX_HEAD_BYTES:
        return
    os.environ[MAX_HEAD_BYTES_ENV] = str(head_bytes)  # the workers read it when they start
    HeadDeadline.max_head_bytes = head_bytes  # this process, read when the server was imported


def _uvicorn_options(args: argparse.Namespace) -> dict[str, Any]:
    """What ``run`` passes to uvicorn, with or without the management API.

    ``proxy_headers`` is off: the gateway's ``trusted_proxies`` alone decides who the client is,
    so uvicorn must not rewrite the client address or scheme from X-Forwarded-* headers itself.
    """
    from .server.logconfig import run_log_config

    # The handler's format is the lines' (the workers write the config's format unless told another): a
    # bare "text" default put "INFO:     " before each JSON object of telemetry.access_log: json.
    access = "off" if args.no_access_log else (args.access_log_format or getattr(args, "config_access_log", "text"))
    log_config = args.log_config or run_log_config(level=args.log_level, access_log=access)
    where = {"uds": args.uds} if args.uds is not None else {"host": args.host, "port": args.port}
    return {"factory": True, **where, "workers": args.workers, "ws": args.ws,
            "http": "asgi_ws_gateway.server:GatewayHTTPProtocol",  # closes clients slow to send a request head
            "log_level": args.log_level, "lifespan": "on", "proxy_headers": False,
            "log_config": log_config, "access_log": not args.no_access_log,
            # Past it the server cancels what has not closed: a connection held the shutdown for ever.
            "timeout_graceful_shutdown": getattr(args, "shutdown_timeout", None),
            # A client's message larger than uvicorn's 16 MiB was refused whatever its API allowed.
            **({"ws_max_size": args.ws_max_size} if hasattr(args, "ws_max_size") else {}),
            # With --workers: a started worker that does not answer in time is replaced (serving._Worker
            # gives one still starting WORKER_START_GRACE instead).
            "timeout_worker_healthcheck": args.timeout_worker_healthcheck, **_tls_options(args)}  # fmt: skip


def _tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """uvicorn's options for ``run``'s TLS: none without a certificate. Its loop then gives a TLS
    handshake the request-head deadline, not the event loop's 60 s (:mod:`.server.tls_loop`)."""
    if args.ssl_certfile is None:
        return {}
    return {"ssl_certfile": args.ssl_certfile, "ssl_keyfile": args.ssl_keyfile,
            "ssl_keyfile_password": os.environ.get(TLS_PASSWORD_ENV) or None,
            "loop": "asgi_ws_gateway.server:tls_bounded_loop"}  # fmt: skip


DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
"""Where ``run`` listens without ``--host``, ``--port`` or ``--uds``."""


def _port(value: str) -> int:
    """``--port``: 0 (any free port) to 65535."""
    port = _integer(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535)")
    return port


def _uds_mode(value: str) -> int:
    """``--uds-mode``: permission bits in octal (``660``, ``0660``, ``0o660``), the owner's read and write
    among them (the next ``run`` on the path connects to it to tell a live socket from a stale one)."""
    digits = value.removeprefix("0o").removeprefix("0O")
    if not (1 <= len(digits) <= 4 and all(digit in "01234567" for digit in digits)):
        raise argparse.ArgumentTypeError(f"{value!r} is not an octal mode such as 660 (digits 0 to 7)")
    mode = int(digits, 8)
    if mode > 0o777:
        raise argparse.ArgumentTypeError(f"{value}: permission bits only (at most 777), no setuid, setgid or sticky")
    if mode & 0o600 != 0o600:
        raise argparse.ArgumentTypeError(f"{value}: the owner needs read and write (6 as the first digit), as the "
                                         "next start connects to tell a live socket from a stale one")  # fmt: skip
    return mode


def _own_port(value: str) -> int:
    """``--management-port``: a port the operator knows (0 would be one nobody is told of)."""
    port = _port(value)
    if port == 0:
        raise argparse.ArgumentTypeError("0 is not a port (1 to 65535)")
    return port


def _management_path(value: str) -> str:
    """``--management``: a path of its own (``/`` would leave it nowhere to answer) that clients reach as written."""
    from .management.mount_path import management_path_problem

    _at_most(value, MAX_MANAGEMENT_PATH, "characters (a path prefix)")
    if (problem := management_path_problem(value)) is not None:
        raise argparse.ArgumentTypeError(f"{value!r}: {problem}")
    return value


def _workers(value: str) -> int:
    """``--workers``: 1 to 8 per CPU this process may use (each worker is a process: a typo must not fork thousands)."""
    workers, most = _integer(value), 8 * len(os.sched_getaffinity(0))
    if not 1 <= workers <= most:
        raise argparse.ArgumentTypeError(f"{workers}: from 1 to {most} (8 per CPU; {most // 8} here)")
    return workers


MAX_HEALTHCHECK_TIMEOUT = 3600
"""``--timeout-worker-healthcheck``'s largest value: an hour (a hung worker is replaced, if late)."""


def _healthcheck_timeout(value: str) -> int:
    """``--timeout-worker-healthcheck``: whole seconds, as uvicorn's, 1 to :data:`MAX_HEALTHCHECK_TIMEOUT`."""
    seconds = _integer(value)
    if not 1 <= seconds <= MAX_HEALTHCHECK_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{seconds}: from 1 to {MAX_HEALTHCHECK_TIMEOUT} seconds")
    return seconds


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def _ws_protocol(value: str) -> str:
    """``--ws``: one of uvicorn's names, or a protocol class that imports (checked before serving)."""
    _at_most(value, MAX_MODULE, "characters (module:attribute)")
    from uvicorn.config import WS_PROTOCOLS  # read as run's options are (argparse converts no other command's)
    from uvicorn.importer import ImportFromStringError, import_from_string

    if value in WS_PROTOCOLS or value == DEFAULT_WS:  # the gateway's own: imported by the processes that serve
        return value
    try:
        import_from_string(value)
    except (ImportFromStringError, ImportError) as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc} (or one of {', '.join(WS_PROTOCOLS)})") from None
    return value


def _log_config(value: str) -> str:
    """``--log-config``: applied once here, as uvicorn will apply it, so a broken file is a usage error
    naming the file, not a traceback from the server. The error gives the problem and, where the
    parser knows it, its line and column; never the file's text (a handler's password, an API key)."""
    import logging.config  # run's option alone (it imports socketserver)

    try:
        text = read_regular_file(value).decode("utf-8")  # fileConfig read nothing from a missing file
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{value}: {type(exc).__name__}: {exc}") from None
    mapping = value.endswith((".json", ".yaml", ".yml"))
    try:
        if mapping:
            data = load_unique(text) if value.endswith(".json") else safe_load(text)
            problem = alias_problem(data)
            if problem:
                raise ValueError(problem)
            logging.config.dictConfig(data)
        else:
            logging.config.fileConfig(io.StringIO(text), disable_existing_loggers=False)
    except RecursionError:  # the parsers recurse per level of nesting
        raise argparse.ArgumentTypeError(f"{value}: nested too deeply to read") from None
    except Exception as exc:  # whatever the parsers, logging.config or a handler's class raise
        raise argparse.ArgumentTypeError(f"{value}: {_log_config_problem(exc, mapping)}") from None
    return value


def _log_config_problem(exc: Exception, mapping: bool) -> str:
    """``Type: problem (line L, column C)`` for a logging configuration that cannot be applied.

    Parsers quote the text around an error (PyYAML its line, configparser a line or a raw value,
    Python a name it evaluated in ``args=``), and a handler's class may quote what it was given: only
    positions, names of sections and classes, and the parsers' own words are kept. dictConfig wraps
    every handler's error in a ``ValueError`` naming the section (``Unable to configure handler
    'mail'``), shown with its cause's type; fileConfig lets the handler's own error through.
    """
    context = exc.__cause__ or exc.__context__
    if isinstance(exc, RuntimeError) and isinstance(context, configparser.Error):  # fileConfig's "... is invalid"
        exc = context
    kind = type(exc).__name__
    hidden = "(not shown: it may quote the file's text)"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{kind}: {exc.problem or exc.context or 'not valid YAML'}{where}"
    if isinstance(exc, json.JSONDecodeError):
        return f"{kind}: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, configparser.Error):
        errors = getattr(exc, "errors", None)  # ParsingError's (line number, line) pairs
        line = getattr(exc, "lineno", None) or (errors[0][0] if errors else None)
        section, option = getattr(exc, "section", None), getattr(exc, "option", None)
        places = (f"line {line}" if line else "", f"section [{section}]" if section else "",
                  f"option {option}" if option else "")  # fmt: skip
        return f"{kind}: {', '.join(p for p in places if p) or 'not an INI file'}; the text {hidden}"
    if isinstance(exc, SyntaxError):  # fileConfig evaluates a handler's args and kwargs as Python
        return f"{kind}: a handler's args or kwargs are not a Python expression: {exc.msg}"
    if isinstance(exc, (KeyError, ImportError, AttributeError)) or (mapping and isinstance(exc, ValueError)):
        cause = exc.__cause__  # KeyError: a missing section; ImportError, AttributeError: a class's path
        return f"{kind}: {exc}" + (f" ({type(cause).__name__})" if cause is not None else "")
    return f"{kind}: the message {hidden}"


def _redis_prefix(value: str) -> str:
    """``--redis-prefix``: what ``store.prefix`` takes (a brace would move the keys' cluster hash tag)."""
    _at_most(value, MAX_PREFIX, "characters (every key carries it)")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", value):
        raise argparse.ArgumentTypeError(f"{value!r}: letters, digits and _.:- only")
    return value


def _redis_url(value: str) -> str:
    """``--redis``: rejected at once when malformed (the message never repeats the URL: it may hold a password)."""
    from .config.redis_tls_files import check_redis_tls_files  # pydantic, redis: only for this option
    from .redis_client import parse_redis_url

    _at_most(value, MAX_URL, "characters")
    try:
        parse_redis_url(value)
        check_redis_tls_files(value)  # the files a rediss:// URL names: loaded now, not at the first call
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


# MAX_PREFIX and MAX_URL are config.limits', written again: importing config imports pydantic, which the
# management commands and --help do without (tests/test_cli_imports.py); tests/test_bounds_cli.py holds them equal.
MAX_PREFIX = 64
"""``--redis-prefix``: as ``store.prefix``."""
MAX_URL = 2048
"""``--redis`` and ``$ASGI_WS_GATEWAY_REDIS``: as ``store.url``."""
MAX_HOST = 253
"""``--host``, ``--management-host``: the longest DNS name (RFC 1035 §2.3.4); an address is shorter."""


def _at_most(value: str, most: int, unit: str) -> None:
    """A usage error when ``value`` is longer than ``most`` (not quoted: it may be a URL with a password)."""
    if len(value) > most:
        raise argparse.ArgumentTypeError(f"{len(value):,} characters: at most {most} {unit}")


def _host(value: str) -> str:
    """``--host``, ``--management-host``: a name or an address, bounded; nothing a terminal obeys."""
    _at_most(value, MAX_HOST, "characters (a DNS name or an address)")
    if not value or not value.isprintable() or value != value.strip():
        raise argparse.ArgumentTypeError("not a host name or address (empty, spaces or control characters)")
    return value


def _file_path(value: str) -> str:
    """``CONFIG``, ``--state``: a path the system can take (no longer than ``PATH_MAX``, no NUL)."""
    _at_most(value, MAX_PATH, "characters (PATH_MAX)")
    if not value or "\x00" in value:
        raise argparse.ArgumentTypeError("not a file path (empty, or a NUL character)")
    return value


def _working_directory_on_import_path() -> None:
    """As uvicorn does: asgi:module:attr upstreams and apps, plugins, --ws classes and --log-config handlers
    import from the working directory (the last two are checked while the options are read).

    Not one another user can write: first on ``sys.path``, a module of theirs there (``uvicorn.py``,
    ``secrets.py``) ran as this user, root too, before any installed one: ``check`` or ``run`` started in
    ``/tmp`` ran theirs. It is then taken off (``python -m`` put it there), also for the interpreters ``run``
    spawns (``PYTHONSAFEPATH``: ``-c`` would put it back before ``sys.path`` is handed over), with a warning.
    Nor one another user can put theirs in the place of (a directory above it they may write without the
    sticky bit): the path is what is imported from, by the workers too, not the directory started in.
    """
    here = os.getcwd()
    problem = writable_by_others(here)
    verb = "write"
    if problem is None and (problem := replaceable_by_others(here)) is not None:
        verb = "replace"
    if problem is None:
        if "" not in sys.path and here not in sys.path:
            sys.path.insert(0, here)
        return
    sys.path[:] = [entry for entry in sys.path if entry not in ("", ".", here)]
    os.environ["PYTHONSAFEPATH"] = "1"
    shown = printable(here, quote=False)
    print(f"warning: the working directory {shown} is not on the import path: other users can {verb} it "
          f"({problem}), and a module of theirs there would run as this user", file=sys.stderr)  # fmt: skip


def _plugin(value: str) -> str:
    """``--plugin``: a module name as the configuration's ``plugins`` takes it (checked when imported)."""
    _at_most(value, MAX_MODULE, "characters (a module name)")
    return value


def _warn_credentials_in_argv(redis_url: str) -> None:
    """``--redis`` with a password (or a user name, ``?password=``): as ``--token`` warns, ``ps`` shows it."""
    from .redact import redact_url_credentials

    if redact_url_credentials(redis_url) != redis_url:
        print(
            f"warning: --redis carries credentials, and every user's ps shows them: use ${REDIS_ENV}", file=sys.stderr
        )


def _set_management_env(args: argparse.Namespace) -> None:
    from .management import standalone as managed

    settings = {
        managed.PATH_ENV: args.management,
        managed.REDIS_ENV: args.redis,
        managed.PREFIX_ENV: args.redis_prefix,
        managed.STATE_ENV: os.path.abspath(args.state) if args.state else None,
        managed.PORT_ENV: str(args.management_port) if args.management_port else None,
    }
    os.environ.update({name: value for name, value in settings.items() if value})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
