"""The command line against a running gateway: ``apis``, ``products``, ``subscriptions``,
``connections``, ``export`` (through :class:`ManagementClient`) and ``connect``.

Exit codes: 0 success; 1 failed (gateway unreachable or too slow, server error, a redirect or any
answer but the expected one; ``connect``: could not connect, or redirected);
2 usage error or invalid input (422); 3 not found (404); 4 unauthorized (401/403); 5 conflict
(409, 412; ``connections kick``: the connection is already closing, with another close); 6
``connect`` only: the connection closed with a code other than 1000/1001; 8 ``connections list``
only: the listing is incomplete, some workers did not answer (the rows of those that did printed, a
warning naming the others on stderr).

Every value from the server (names, URLs, ids, an error's detail and problems, a key, a worker) is
printed through :func:`_shown`: control, line-breaking and bidi characters as escapes, so a hostile
server cannot write to the terminal (``\\x1b]52;`` sets the clipboard) nor forge a line. ``--json``
and YAML output escape them themselves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import yaml

from .. import management  # its ManagementClient (httpx2) is imported by the commands that call the API
from ..loading import alias_problem, read_regular_file
from ..redact import printable, redact_free_text, redact_url_credentials
from ..yaml_keys import AmbiguousNumber, DuplicateKey, safe_load
from . import connect_usage
from .client_endpoint import tls_context, token_problem
from .client_errors import ManagementAPIError, UnexpectedAnswerError
from .client_types import ConnectionListing, Written
from .connect_credentials import (
    ConnectParser,
    EachRead,
    read_as,
    read_header,
    read_header_name,
    read_header_value,
    read_subprotocol,
    read_url,
    refuse_credentials_in_clear,
)
from .own_files import write_own_file

if TYPE_CHECKING:
    from .client import ManagementClient

URL_ENV, TOKEN_ENV = "ASGI_WS_GATEWAY_URL", "ASGI_WS_GATEWAY_ADMIN_TOKEN"
REDIS_ENV = "ASGI_WS_GATEWAY_REDIS"
"""The management store's Redis URL under ``run`` (``--redis`` when given): out of ``ps``'s sight."""
DEFAULT_URL = "http://127.0.0.1:8000/_gateway"
MANAGEMENT_HOST = "127.0.0.1"
"""Where ``run --management-port`` listens unless told otherwise: loopback, so only this host reaches it."""
_EXIT = {401: 4, 403: 4, 404: 3, 409: 5, 412: 5, 400: 2, 422: 2}
EXIT_INCOMPLETE = 8
"""``connections list`` printed what answered, and some workers did not: their connections are not there."""
SHOWN_MISSING = 20
"""Workers named in the warning of an incomplete listing (the rest counted)."""
Action: TypeAlias = "Callable[[ManagementClient, argparse.Namespace], Awaitable[Any]]"


def add_commands(commands: Any) -> None:
    """Add the management and ``connect`` subcommands to the ``asgi-ws-gateway`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"management API URL (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    common.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"read the admin token from this file (its final line break ignored); default: ${TOKEN_ENV}",
    )
    common.add_argument(
        "--token", help="the admin token itself: every user's ps shows it (prefer --token-file or the variable)"
    )
    common.add_argument("--cacert", metavar="FILE", help="trust the CA certificates of this PEM file (a private CA)")
    common.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="send the admin token over plain http to a host other than this one (anyone on the path reads it)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")

    def group(name: str, help: str) -> Any:
        parser = commands.add_parser(name, help=help, description=help)
        return parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(sub: Any, name: str, help: str, run: Action) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, parents=[common])
        parser.set_defaults(run=run)
        return parser

    apis = group("apis", "WebSocket APIs of a running gateway")
    action(apis, "list", "list the APIs", lambda c, a: c.list_apis())
    action(apis, "show", "show one API", lambda c, a: c.get_api(a.name)).add_argument("name")
    create = action(
        apis,
        "create",
        "create an API from a YAML/JSON file ('-': stdin)",
        lambda c, a: _written(c.create_api(_read(a.file))),
    )
    create.add_argument("file")
    update = action(
        apis,
        "update",
        "replace an API with a YAML/JSON file ('-': stdin)",
        lambda c, a: _written(c.replace_api(a.name, _read(a.file), drain=a.drain)),
    )
    update.add_argument("name")
    update.add_argument("file")
    delete = action(apis, "delete", "delete an API", lambda c, a: _warned(c.delete_api(a.name, drain=a.drain)))
    delete.add_argument("name")
    for parser in (update, delete):
        parser.add_argument("--drain", action="store_true", help="also close its open connections (gracefully)")

    products = group("products", "products (groups of APIs that subscriptions grant)")
    action(products, "list", "list the products", lambda c, a: c.list_products())
    create = action(
        products,
        "create",
        "create a product",
        lambda c, a: _written(c.create_product(a.name, a.api, display_name=a.display_name, force=a.force)),
    )
    create.add_argument("name")
    create.add_argument("--api", action="append", default=[], help="an API of the product (repeatable)")
    create.add_argument("--display-name")
    delete = action(
        products,
        "delete",
        "delete a product",
        lambda c, a: _warned(c.delete_product(a.name, force=a.force, drain=a.drain)),
    )
    delete.add_argument("name")
    delete.add_argument(
        "--drain", action="store_true", help="also close its APIs' connections admitted by a subscription it granted"
    )
    for parser in (create, delete):
        parser.add_argument(
            "--force", action="store_true", help="even if clients without a subscription key get into an API"
        )

    subs = group("subscriptions", "subscriptions: keys to products")
    action(subs, "list", "list subscriptions", lambda c, a: c.list_subscriptions(a.product)).add_argument("--product")
    action(subs, "show", "show a subscription", lambda c, a: c.get_subscription(a.id)).add_argument("id")
    create = action(
        subs,
        "create",
        "create a subscription; prints its key (shown this once)",
        lambda c, a: c.create_subscription(a.product, name=a.name, subscription_id=a.id),
    )
    create.add_argument("product")
    create.add_argument("--name", help="the subscriber")
    create.add_argument("--id", help="the subscription id (default: generated)")
    for name, help, method in (
        ("suspend", "suspend a subscription", "suspend_subscription"),
        ("activate", "activate a subscription", "activate_subscription"),
        ("regenerate-key", "replace a subscription's key; prints the new one", "regenerate_key"),
        ("delete", "delete a subscription", "delete_subscription"),
    ):
        parser = action(subs, name, help, _by_id(method))
        parser.add_argument("id")
        if name != "activate":
            parser.add_argument("--drain", action="store_true", help="also close the connections it admitted")

    conns = group("connections", "live connections, on every worker")
    listing = action(
        conns,
        "list",
        f"list open connections (exit code {EXIT_INCOMPLETE}: some workers did not answer, named on stderr)",
        lambda c, a: c.connection_listing(a.api),
    )
    listing.add_argument("--api")
    send = action(conns, "send", "send a message to a connection's client", _send)
    send.add_argument("id")
    send.add_argument("message", help="text (or hex with --binary)")
    send.add_argument("--binary", action="store_true", help="MESSAGE is hexadecimal: send it as a binary message")
    kick = action(
        conns, "kick", "close a connection (both sides; exit 5: it is already closing)",
        lambda c, a: c.kick(a.id, a.code, a.reason),
    )  # fmt: skip
    kick.add_argument("id")
    kick.add_argument("--code", type=int, default=1000, help="close code (default: 1000)")
    kick.add_argument("--reason", default="", help="close reason")

    export = commands.add_parser(
        "export",
        parents=[common],
        help="print the merged configuration (file + changes)",
        description="Print the running configuration as a config file (YAML, or --json).",
    )
    export.add_argument("--output", "-o", help="write to this file instead of standard output")
    export.set_defaults(run=lambda c, a: c.export_config(), action="export")

    connect = commands.add_parser(
        "connect",
        help="interactive WebSocket client for testing an API",
        description=connect_usage.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # "--t=SECRET" was "ambiguous option: --t=SECRET could match --token, --token-file"
    )
    connect.__class__ = ConnectParser  # add_parser makes it of the top parser's class: this one names no leftover
    connect.add_argument("target", metavar="URL", type=read_as(read_url), help="ws:// or wss:// URL")
    connect.add_argument(
        "-H", "--header", action=EachRead, read=read_header, default=[], help="'Name: value' (repeatable)"
    )
    connect.add_argument(
        "-s", "--subprotocol", action=EachRead, read=read_subprotocol, default=[],
        help="offer a subprotocol (repeatable)",
    )  # fmt: skip
    connect.add_argument("--token", help="send 'Authorization: Bearer TOKEN' (every user's ps shows it)")
    connect.add_argument(
        "--token-file", metavar="PATH", help="send 'Authorization: Bearer' with the token of this file"
    )
    connect.add_argument("--subscription-key", type=read_as(read_header_value), help="send a subscription key header")
    connect.add_argument("--cacert", metavar="FILE", help="for wss://: trust the CA certificates of this PEM file")
    connect.add_argument(
        "--key-header",
        type=read_as(read_header_name),
        default="Ocp-Apim-Subscription-Key",
        help="header for --subscription-key (default: %(default)s)",
    )
    connect.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="send credentials (--token, --subscription-key, -H, -s, the URL's) over plain ws:// to another host",
    )
    connect.add_argument(
        "--linger", type=_seconds, default=1.0, help="seconds to wait after the input ends (default: 1)"
    )
    connect.add_argument(
        "--max-size",
        type=_size,
        default=connect_usage.DEFAULT_MAX_SIZE,
        help="bytes a received message may have, inflated: 4096, 64KiB, 16MiB (default: 16MiB); more closes with 1009",
    )
    connect.add_argument("--json", action="store_true", help="print one JSON object per event")


def _seconds(value: str) -> float:
    """A duration: a finite number, 0 or more (``nan`` would wait for ever, ``inf`` too)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value}: seconds, a finite number from 0")
    return seconds


_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _size(value: str) -> int:
    """A size in bytes: a positive integer, optionally in KiB, MiB or GiB (``64KiB``)."""
    digits = value.rstrip("BbKkMmGgIi")
    unit = _UNITS.get(value[len(digits) :].lower())
    if not (digits.isascii() and digits.isdigit()) or unit is None or int(digits) == 0:  # not "١٦", "²"
        raise argparse.ArgumentTypeError(f"{value!r}: a positive number of bytes (4096, 64KiB, 16MiB, 1GiB)")
    return int(digits) * unit


def run(args: argparse.Namespace) -> int:
    """Run a management or ``connect`` command; returns the exit code."""
    if args.command == "connect":
        return _run_connect(args)
    import asyncio  # with the HTTP client: a command that calls the API needs them, --help and usage errors do not

    import httpx2  # the management commands' HTTP client: not imported by check, run or --help

    try:
        args.token = _token(args)
        result = asyncio.run(_call(args))
    except UnexpectedAnswerError as exc:
        print(f"error: {_unexpected(exc)}", file=sys.stderr)
        return 1
    except ManagementAPIError as exc:
        problems = "".join(f"\n  {_shown(p)}" for p in exc.problems)
        print(f"error: {exc.status} {_shown(exc.title)}: {_shown(exc.detail)}{problems}", file=sys.stderr)
        return _EXIT.get(exc.status, 1)
    except httpx2.TransportError as exc:
        # The URL may carry a proxy's or the API's credentials (ASGI_WS_GATEWAY_URL=https://user:password@...).
        where = redact_url_credentials(args.url)
        print(f"error: cannot reach the management API at {_shown(where)}: {_shown(redact_free_text(str(exc)))}",
              file=sys.stderr)  # fmt: skip
        return 1
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: {_shown(exc)}", file=sys.stderr)
        return 2
    if isinstance(result, ConnectionListing):
        _print(args, result.connections)
        return _incomplete(result)
    try:
        _print(args, result)
    except OSError as exc:  # export -o: a file that may not be written (another user's, a link): not a traceback
        print(f"error: --output: {_shown(exc)}", file=sys.stderr)
        return 2
    return 0


def _incomplete(listing: ConnectionListing) -> int:
    """0 for a listing every worker answered; else a warning on stderr naming those that did not, and
    :data:`EXIT_INCOMPLETE`: a script tells a partial listing from a whole one (the rows are printed alike)."""
    if listing.complete:
        return 0
    named = ", ".join(_shown(worker) for worker in listing.missing[:SHOWN_MISSING])
    more = len(listing.missing) - SHOWN_MISSING
    missing = f": missing {named}{f' and {more} more' if more > 0 else ''}" if named else ""
    print(f"warning: incomplete listing, {listing.answered} of {listing.expected} worker(s) answered{missing} "
          "(their connections are not listed: off the management bus, or late)", file=sys.stderr)  # fmt: skip
    return EXIT_INCOMPLETE


def _warn(warnings: Sequence[Any]) -> None:
    """The configuration warnings a change answered with, on stderr: valid, probably not meant."""
    for warning in warnings:
        print(f"warning: {_shown(warning)}", file=sys.stderr)


async def _written(change: Awaitable[Written]) -> dict[str, Any]:
    """A create or replace: its warnings on stderr, the resource alone to print (YAML or ``--json``), so
    that what is printed can be sent back as it is."""
    written = await change
    _warn(written.warnings)
    return dict(written)


async def _warned(deletion: Awaitable[list[str]]) -> None:
    """A deletion, its warnings on stderr (it prints nothing else)."""
    _warn(await deletion)


async def _call(args: argparse.Namespace) -> Any:
    client = management.ManagementClient(
        args.url, token=args.token, verify=args.cacert, allow_insecure_http=args.allow_insecure_http
    )
    async with client:
        return await args.run(client, args)


def _token(args: argparse.Namespace) -> str | None:
    """The admin token: ``--token-file``'s, ``--token`` (with a warning: ``ps`` shows it), or ``$TOKEN_ENV``."""
    if args.token_file is not None:
        if args.token is not None:
            raise ValueError("give --token-file or --token, not both")
        return _token_file(args.token_file)
    if args.token is not None:
        print(f"warning: --token is in every user's ps: use --token-file or ${TOKEN_ENV}", file=sys.stderr)
        return str(args.token)
    return os.environ.get(TOKEN_ENV) or None


def _token_file(path: str) -> str:
    """A token file's text without its final line break (``echo``, a Kubernetes secret, CRLF files)."""
    try:
        text = read_regular_file(path).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the token file is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


def _unexpected(exc: UnexpectedAnswerError) -> str:
    """An answer that is not the call's, said with its status; a redirect's target without its credentials."""
    if exc.location is not None:
        where = redact_url_credentials(exc.location)
        return f"the management API redirected ({exc.status}) to {_shown(where)}: use that URL (--url)"
    return f"unexpected answer from the management API ({exc.status}): {_shown(exc.detail)}"


def _by_id(method: str) -> Action:
    async def call(client: ManagementClient, args: argparse.Namespace) -> Any:
        drain = {"drain": True} if getattr(args, "drain", False) else {}
        return await getattr(client, method)(args.id, **drain)

    return call


async def _send(client: ManagementClient, args: argparse.Namespace) -> str:
    return await client.send(args.id, bytes.fromhex(args.message) if args.binary else args.message)


def _read(file: str) -> Any:
    text = sys.stdin.read() if file == "-" else read_regular_file(file).decode("utf-8")
    try:
        data = safe_load(text)  # JSON is YAML; a key twice in one mapping is refused, as in the file
    except (DuplicateKey, AmbiguousNumber) as exc:
        raise ValueError(f"{file}:{exc.line}:{exc.column}: {exc.problem}") from None
    except RecursionError:
        raise ValueError(f"{file}: nested too deeply to read") from None
    problem = alias_problem(data)  # its JSON, sent to the API, would be the aliases expanded
    if problem:
        raise ValueError(f"{file}: {problem}")
    return data


def _shown(value: object) -> str:
    """A value from the server (or an error about it) as one line a terminal shows and does not obey;
    invisible characters too (U+200B, U+FEFF: a name that looks like another), as escapes."""
    text = printable(str(value), quote=False)
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}" for c in text
    )


def _yaml(document: Any) -> str:
    """YAML escapes control and non-ASCII characters itself; one line a value (no folding)."""
    return yaml.safe_dump(document, sort_keys=False, width=math.inf)


def _print(args: argparse.Namespace, result: Any) -> None:
    if args.command == "export":
        text = json.dumps(result, indent=2, allow_nan=False) if args.json else _yaml(result)
        if args.output:
            write_own_file(args.output, text)  # never through another user's link, nor into their file
        else:
            print(text, end="" if text.endswith("\n") else "\n")
        return
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
        return
    if result is None:
        return
    if isinstance(result, str):  # the worker that held the connection
        print(f"done (on worker {_shown(result)})")
    elif isinstance(result, list):
        _table(args.command, result)
    elif isinstance(result, dict):
        key = _shown(result["key"]) if "key" in result else None
        if key is not None:
            print(f"key: {key}\n(shown this once: only its hash is kept)", file=sys.stderr)
        print(_yaml({k: v for k, v in result.items() if k != "key"}), end="")
        if key is not None:
            print(f"key: {key}")


_COLUMNS = {
    "apis": ("name", "path", "upstreams"),
    "products": ("name", "apis", "subscription_required"),
    "subscriptions": ("id", "product", "name", "state"),
    "connections": ("id", "api", "client", "subscription", "messages_in", "messages_out", "worker"),
}


def _table(command: str, rows: Sequence[dict[str, Any]]) -> None:
    columns = _COLUMNS[command]

    def cell(value: Any) -> str:
        if isinstance(value, list):
            return ",".join(_shown(v.get("url") if isinstance(v, dict) else v) for v in value)
        return "-" if value is None else _shown(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [[c.upper() for c in columns], *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _run_connect(args: argparse.Namespace) -> int:
    headers: list[tuple[str, str]] = list(args.header)  # read when parsed (read_header)
    try:
        token = _connect_token(args)
        tls = tls_context(args.cacert) if args.cacert is not None else None
        refuse_credentials_in_clear(  # before anything is sent: anyone on the path would read them
            args.target,
            headers=headers,
            subprotocols=args.subprotocol,
            named=[
                name for name, given in (("the token", token), ("--subscription-key", args.subscription_key)) if given
            ],
            allow_insecure_http=args.allow_insecure_http,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {_shown(exc)}", file=sys.stderr)
        return 2
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    if args.subscription_key:
        headers.append((args.key_header, args.subscription_key))
    import asyncio

    from .connect import session  # websockets' client: this command's alone

    try:
        return asyncio.run(
            session(
                args.target,
                headers=headers,
                subprotocols=args.subprotocol,
                linger=args.linger,
                as_json=args.json,
                max_size=args.max_size,
                ssl=tls,
            )
        )
    except KeyboardInterrupt:
        return 130


def _connect_token(args: argparse.Namespace) -> str | None:
    """``connect``'s bearer token: ``--token-file``'s, or ``--token`` (with a warning: ``ps`` shows it)."""
    if args.token_file is not None:
        if args.token is not None:
            raise ValueError("give --token-file or --token, not both")
        token = _token_file(args.token_file)
    elif args.token:
        print("warning: --token is in every user's ps: use --token-file", file=sys.stderr)
        token = str(args.token)
    else:
        return None
    if (problem := token_problem(token)) is not None:
        raise ValueError(problem.replace("admin token", "token"))
    return token


__all__ = ["EXIT_INCOMPLETE", "MANAGEMENT_HOST", "REDIS_ENV", "add_commands", "run"]
