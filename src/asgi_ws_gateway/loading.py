"""The one way configuration reaches code, files and the environment, and the gate in front of it.

A configuration can name things the gateway then loads: in-process apps (``asgi:module:attr``),
functions (``transform-message`` ``call``), files (PEM keys, JSON Schemas, CA bundles, ``$ref``\\ s,
certificate chains: :func:`load_cert_chain`, which never lets OpenSSL prompt for a passphrase) and
environment variables (``secret_env``). All of it goes through this module, so one switch
decides what a configuration from a less trusted source may load: the management API validates
and applies its changes inside :func:`restricted`, with a :class:`Gate` that admits only what the
operator allowed (the configuration file's own loads and ``allowed_asgi_upstreams``). Anything else
is refused *before* the module is imported or the file opened (``tests/test_management_security.py``
keeps every other module from importing by name or reading files).
"""

from __future__ import annotations

import errno
import functools
import importlib
import inspect
import os
import ssl
import stat
import types
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .json_names import load_unique
from .key_files import warn_if_readable

REFUSED = "not allowed through the management API"
MAX_VALUES = 1_000_000
"""Values a YAML file (configuration, JSON Schema) may stand for with its aliases expanded."""
MAX_FILE_BYTES = 64 * 1024 * 1024
"""Bytes of a file the operator names (configuration, state file, ``--log-config``, schema, key):
four times the largest configuration the limits allow (100,000 subscriptions, 1,000 APIs)."""


class LoadRefused(ValueError):
    """A restricted configuration tried to load something the operator did not allow."""


@dataclass
class Gate:
    """What a restricted configuration may load.

    Args:
        modules: ``module:attr`` targets, or whole modules (``module``), that may be imported.
        files: paths that may be read (as written in the configuration).
        env: environment variables that may be read.
        key_passwords: environment variables that may be read as a private key's passphrase, and as
            nothing else (a ``secret_env`` of it would make the passphrase an HMAC secret to guess
            against; a JWT secret as a passphrase, an oracle of whether the two are one).
        record: admit everything and remember it (how the configuration file's loads are found).
    """

    modules: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    env: set[str] = field(default_factory=set)
    key_passwords: set[str] = field(default_factory=set)
    record: bool = False

    def admit_import(self, target: str) -> None:
        module = target.partition(":")[0]
        if self.record:
            self.modules.add(target)
        elif target not in self.modules and module not in self.modules:
            raise LoadRefused(f"importing '{target}' is {REFUSED} (the operator must allow it)")

    def admits_whole_module(self, target: str) -> bool:
        """Whether ``target`` is admitted only because its whole module is (:func:`import_object` then
        keeps it to that module's own objects)."""
        return not self.record and target not in self.modules and target.partition(":")[0] in self.modules

    def admit(self, value: str, allowed: set[str], what: str) -> None:
        if self.record:
            allowed.add(value)
        elif value not in allowed:
            raise LoadRefused(f"{what} '{value}' is {REFUSED}")


_gate: ContextVar[Gate | None] = ContextVar("asgi_ws_gateway_load_gate", default=None)
_deferred: ContextVar[list[str] | None] = ContextVar("asgi_ws_gateway_deferred_imports", default=None)


@contextmanager
def restricted(gate: Gate) -> Iterator[Gate]:
    """Within this block, every load goes through ``gate`` (refused unless it admits it)."""
    token = _gate.set(gate)
    try:
        yield gate
    finally:
        _gate.reset(token)


@contextmanager
def deferred_imports() -> Iterator[list[str]]:
    """Within this block :func:`import_object` imports nothing: it checks, and returns a stand-in.

    Validation runs in such a block, so no module is imported before the whole configuration is
    known to be valid; the list yielded holds the targets to import afterwards.
    """
    pending: list[str] = []
    token = _deferred.set(pending)
    try:
        yield pending
    finally:
        _deferred.reset(token)


async def _stand_in(*args: Any) -> None:
    """What a deferred import returns: an async function, as imported targets must be."""


def recording() -> AbstractContextManager[Gate]:
    """A block that loads freely and records what it loaded in the :class:`Gate` it yields."""
    return restricted(Gate(record=True))


def parse_target(target: str) -> tuple[str, str]:
    """``module:attr`` split in two; ``ValueError`` when either part is missing or not dotted names."""
    module, _, attr = target.partition(":")
    if not _dotted(module) or not _dotted(attr):
        raise ValueError(f"'{target}' must name an object as module:attribute")
    return module, attr


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def check_import(target: str) -> None:
    """Raise ``LoadRefused`` if ``target`` could not be imported here; imports nothing."""
    parse_target(target)
    gate = _gate.get()
    if gate is not None:
        gate.admit_import(target)


def import_object(target: str) -> Any:
    """Import ``module:attr`` (``ValueError`` if it cannot be; ``LoadRefused`` before importing)."""
    module, attr = parse_target(target)
    check_import(target)
    pending = _deferred.get()
    if pending is not None:
        pending.append(target)
        return _stand_in
    gate = _gate.get()
    own_only = gate is not None and gate.admits_whole_module(target)
    try:
        found = importlib.import_module(module)
        for part in attr.split("."):
            if own_only and part.startswith("_"):
                raise LoadRefused(f"'{target}': '{part}' is private to '{module}', {_WHOLE_MODULE}")
            found = getattr(found, part)
            if own_only and isinstance(found, types.ModuleType):
                raise LoadRefused(f"'{target}' reaches another module, '{found.__name__}', {_WHOLE_MODULE}")
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import '{target}': {exc}") from None
    if own_only and (owner := _foreign_owner(found, module)) is not None:
        raise LoadRefused(f"'{target}' is a function of '{owner}', {_WHOLE_MODULE}")
    return found


_WHOLE_MODULE = f"{REFUSED}: a module allowed whole admits its own objects only (allow the target itself)"


def _foreign_owner(found: Any, module: str) -> str | None:
    """The module a function ``found`` through ``module`` was written in, when that is neither ``module``
    nor one under it (``from asyncio import sleep``); None for the module's own, and for objects that are
    not functions (an app instance built there)."""
    while isinstance(found, functools.partial):
        found = found.func
    if not inspect.isfunction(found) and not inspect.ismethod(found):  # a builtin is no async app anyway
        return None
    owner = str(getattr(found, "__module__", None) or "?")
    return None if owner == module or owner.startswith(f"{module}.") else owner


def check_file(path: str) -> None:
    """Raise ``LoadRefused`` if the file at ``path`` may not be read here; reads nothing."""
    gate = _gate.get()
    if gate is not None:
        gate.admit(path, gate.files, "reading file")


def read_file(path: str) -> bytes:
    """The bytes of a configured file (:func:`read_regular_file`; ``LoadRefused`` first)."""
    check_file(path)
    return read_regular_file(path)


def read_regular_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a file the operator named, which must be a regular file of at most ``limit`` bytes.

    A FIFO with no writer made ``open`` wait for ever (``check`` and start-up hung, silent), and
    ``/dev/zero`` or a misnamed multi-gigabyte log was read until memory ran out (``MemoryError``).
    The file is opened without blocking and judged by what it is, not by its name.

    Raises:
        OSError: as ``open`` raises it, or with ``strerror`` saying what the path is instead
            (``a FIFO, not a regular file``) or that it is ``larger than 67,108,864 bytes``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO's open waits for a writer
    return read_open_file(fd, path, limit)


def read_open_file(fd: int, path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the file open as ``fd`` (closed here), as :func:`read_regular_file` reads them."""
    with os.fdopen(fd, "rb") as file:
        kind = _file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise OSError(errno.EINVAL, f"{kind}, not a regular file", str(path))
        data = file.read(limit + 1)  # what fstat said may have grown since: read no more than allowed
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
    return data


def _file_kind(mode: int) -> str | None:
    """What a path that is not a regular file is (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def cannot_read(exc: OSError) -> str:
    """A file's problem when it cannot be read, in fixed words: the system's reason, never the path or content."""
    return f"cannot be read ({exc.strerror or type(exc).__name__})"


class ChainNotLoaded(Exception):
    """Why :func:`load_cert_chain` loaded nothing; the caller words it (OpenSSL's text is for no one to read).

    Attributes:
        path: the file that could not be read before OpenSSL was asked, or None.
        read_error: then why (words for it: :func:`cannot_read`).
        error: what OpenSSL raised: an ``ssl.SSLError`` (its ``reason`` a code to match,
            ``KEY_VALUES_MISMATCH``), another ``OSError`` (a file replaced since it was read) or a
            ``ValueError`` (a passphrase longer than OpenSSL takes); None when a file was not read or
            ``missing_passphrase``.
        missing_passphrase: the private key is encrypted and no passphrase was given.
        passphrase_tried: OpenSSL asked for the passphrase and was given it (a failure may be a wrong one).
    """

    def __init__(
        self,
        *,
        path: str | None = None,
        read_error: OSError | None = None,
        error: OSError | ValueError | None = None,
        missing_passphrase: bool = False,
        passphrase_tried: bool = False,
    ) -> None:
        super().__init__(path, type(read_error or error).__name__, missing_passphrase, passphrase_tried)
        self.path = path
        self.read_error = read_error
        self.error = error
        self.missing_passphrase = missing_passphrase
        self.passphrase_tried = passphrase_tried


class _NoPassphrase(Exception):
    """OpenSSL asked for a passphrase that the caller does not have."""


def load_cert_chain(
    context: ssl.SSLContext,
    certfile: str,
    keyfile: str | None = None,
    password: str | None = None,
    *,
    limit: int = MAX_FILE_BYTES,
) -> None:
    """Load a certificate chain and its private key into ``context``, never prompting for a passphrase.

    Given no callback, OpenSSL asks for an encrypted key's passphrase on the terminal (a start-up that
    hangs, under a supervisor, for ever). Each file is first admitted (:func:`check_file`) and read as
    :func:`read_regular_file` reads it (at most ``limit`` bytes): a FIFO would hang OpenSSL's own read.

    Args:
        certfile: PEM file: the certificate, then its chain (and the key, when ``keyfile`` is None).
        keyfile: PEM file of the private key, or None.
        password: an encrypted key's passphrase; None: the key must not be encrypted.

    Raises:
        ChainNotLoaded: a file cannot be read, or OpenSSL does not load the chain (never its text).
        LoadRefused: a restricted configuration named a file the operator did not allow.
    """
    for path in (certfile, keyfile):
        if path is not None:
            check_file(path)
            try:
                read_regular_file(path, limit)
            except OSError as exc:
                raise ChainNotLoaded(path=path, read_error=exc) from None
    tried = False

    def passphrase() -> str:
        nonlocal tried
        if password is None:
            raise _NoPassphrase
        tried = True
        return password

    try:
        context.load_cert_chain(certfile, keyfile, passphrase)
    except _NoPassphrase:
        raise ChainNotLoaded(missing_passphrase=True) from None
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ChainNotLoaded(error=exc, passphrase_tried=tried) from None
    warn_if_readable(keyfile or certfile)  # the file the key was read from


MAX_PATH = 4096
"""Characters of a file's path the operator names (the configuration, ``--state``): Linux's ``PATH_MAX``; a
longer one no system call takes."""

MAX_ENV_VALUE = 16_384
"""The longest value :func:`read_env` takes: as a string of a policy's settings (config.limits.MAX_SETTING),
so ``secret_env`` holds what ``secret`` could. A longer HMAC secret was hashed again for every token."""


def read_env(name: str, *, key_password: bool = False) -> str | None:
    """A configured environment variable (None when unset; ``LoadRefused`` when not admitted or longer
    than :data:`MAX_ENV_VALUE`); ``key_password``: read as a private key's passphrase (``Gate.key_passwords``)."""
    gate = _gate.get()
    if gate is not None:
        gate.admit(name, gate.key_passwords if key_password else gate.env, "reading environment variable")
    value = os.environ.get(name)
    if value is not None and len(value) > MAX_ENV_VALUE:
        raise LoadRefused(
            f"environment variable {name} holds {len(value):,} characters: at most {MAX_ENV_VALUE:,} (as in the file)"
        )
    return value


def retrieve_reference(uri: str) -> Any:
    """A JSON Schema's external ``$ref``: a ``file:`` URI the gate admits, never the network."""
    if not uri.startswith("file://"):
        raise LoadRefused(f"'$ref': '{uri}' is not a local file; put the schema inline")
    return load_unique(read_file(uri.removeprefix("file://")).decode("utf-8"))


def allowed_modules(entries: Iterable[str]) -> set[str]:
    """Validate ``allowed_asgi_upstreams`` entries (``module`` or ``module:attr``)."""
    found = set()
    for entry in entries:
        target = entry.removeprefix("asgi:")
        if ":" in target:
            parse_target(target)
        elif not _dotted(target):
            raise ValueError(f"'{entry}' is not a module or module:attribute")
        found.add(target)
    return found


def alias_problem(data: Any) -> str | None:
    """What is wrong with the YAML aliases of ``data``, if anything: PyYAML shares an aliased value
    instead of copying it, so ten lines can stand for a billion values (an "alias bomb") that
    validation would walk one by one, and an alias inside its own anchor is a value that contains
    itself. Each shared mapping or list is measured once."""
    sizes: dict[int, int] = {}  # values a container stands for, expanded (capped past the limit)
    open_: set[int] = set()  # containers being measured: meeting one again is a cycle
    pending: list[tuple[Any, bool]] = [(data, False)]
    while pending:
        node, children_done = pending.pop()
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None or (not children_done and id(node) in sizes):
            continue
        if not children_done:
            if id(node) in open_:
                return "an alias refers to a value that contains it"
            open_.add(id(node))
            pending.append((node, True))
            pending.extend((child, False) for child in children if isinstance(child, dict | list))
            continue
        total = 1 + sum(sizes.get(id(child), 1) if isinstance(child, dict | list) else 1 for child in children)
        sizes[id(node)] = min(total, MAX_VALUES + 1)
        open_.discard(id(node))
    if sizes.get(id(data), 0) > MAX_VALUES:
        return f"holds more than {MAX_VALUES:,} values once its aliases are expanded"
    return None


__all__ = [
    "MAX_ENV_VALUE",
    "MAX_FILE_BYTES",
    "MAX_PATH",
    "MAX_VALUES",
    "REFUSED",
    "ChainNotLoaded",
    "Gate",
    "LoadRefused",
    "alias_problem",
    "allowed_modules",
    "cannot_read",
    "check_file",
    "check_import",
    "deferred_imports",
    "import_object",
    "load_cert_chain",
    "parse_target",
    "read_env",
    "read_file",
    "read_open_file",
    "read_regular_file",
    "recording",
    "restricted",
    "retrieve_reference",
]
