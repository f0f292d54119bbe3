"""Validating a configuration, in order: data, plugins, cross-field rules, policies, then the imports
(:func:`parse_config`); problems of the parts that did validate reported beside those that did not.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from ..loading import deferred_imports, import_object
from ..plugins import MODULE_NAME, load_plugins
from ..strict_numbers import non_finite_numbers
from .apis import ApiConfig
from .checks import cross_check
from .files import placeholder_problems, read_file_and_digest
from .gateway import GatewayConfig
from .problems import describe_errors
from .products import ProductConfig, SubscriptionConfig
from .served_file import serve

PolicyCheck = Callable[[GatewayConfig], list[str]]
"""Checks a configuration's policies (by building them) and returns their problems by field path.

The configuration layer knows no policy: the caller passes this in (``policies/build.py``).
"""


def _no_policy_check(config: GatewayConfig) -> list[str]:
    return []


def parse_config(
    source: GatewayConfig | Mapping[str, Any] | str | Path,
    *,
    import_plugins: bool = True,
    check_policies: PolicyCheck = _no_policy_check,
) -> GatewayConfig:
    """Load and validate a configuration's data; its policies only through ``check_policies``.

    Args:
        source: a :class:`GatewayConfig`, a mapping, or the path of a ``.yaml``/``.yml``/``.json`` file.
        import_plugins: import the modules ``plugins`` names (once per process) before the policies
            are checked. False (the management API): import nothing; modules not already loaded are
            problems.
        check_policies: called with the parts that validated (imports deferred), and once more with
            imports allowed when the configuration named objects to import; its problems are
            reported with the others. :func:`asgi_ws_gateway.policies.build.load_policies` passes
            one that builds the policies it then serves with.

    Raises:
        ConfigError: with every problem found, each as ``field.path: message``; a plugin that cannot
            be imported stops validation there (its policy types would all be unknown).
    """
    origin: str | None = None
    document: Any = None  # a file's data, looked into for an export's placeholders
    served = b""  # its bytes' digest
    if isinstance(source, GatewayConfig):
        config = source
    else:
        if isinstance(source, str | Path):
            origin = str(source)
            source, served = read_file_and_digest(Path(source))
            document = source
        try:
            config = GatewayConfig.model_validate(source)
        except ValidationError as exc:
            problems = describe_errors(exc.errors())
            if import_plugins:  # so the parts that did validate are checked with the plugins' types known
                with contextlib.suppress(ConfigError):
                    load_plugins(_named_plugins(source))
            found = _check_what_validated(source, exc, problems, check_policies)
            raise ConfigError(placeholder_problems(document) + problems + found, origin) from None
    try:  # plugins register policy types: before the policies' settings are checked
        load_plugins(config.plugins, allow_import=import_plugins)
    except ConfigError as exc:
        raise ConfigError(exc.problems, origin) from None
    if problems := placeholder_problems(document):  # before any policy is built with one as its secret
        raise ConfigError(problems, origin)
    with deferred_imports() as imports:
        problems = cross_check(config) + check_policies(config)
    if problems:
        raise ConfigError(problems, origin)
    if problems := _non_finite_numbers(config):
        raise ConfigError(problems, origin)  # typed fields refused them above: these are free-form values
    # Imports happen only now that everything else is known to be valid: in-process apps, then
    # the functions policies call (building the policies again, for real this time).
    problems = resolve_apps(config)
    if imports and not problems:
        problems = check_policies(config)
    if problems:
        raise ConfigError(problems, origin)
    if origin is not None:
        serve(Path(origin), served)  # for ws_gateway.config.file_changed
    return config


def _non_finite_numbers(config: GatewayConfig) -> list[str]:
    """:func:`~asgi_ws_gateway.strict_numbers.non_finite_numbers` of ``config``, asked only when there is one:
    ``json`` refuses an infinity or NaN in C, ~20 times faster than the walk that names where it is, and an
    API found without one is not looked at again (a change through the management API checks every API
    again, each the same object when unchanged)."""
    if _finite(config.model_dump(mode="python", by_alias=True, exclude={"apis"})) and all(
        _finite_api(api) for api in config.apis
    ):
        return []
    return non_finite_numbers(config.model_dump(mode="python", by_alias=True))


# id -> the API found finite, while it lives: its id names it alone. Weakly held: a strong store kept
# the last 4,096 APIs validated alive after their gateway or change was gone, each with its
# in-process upstream's app and all that app held (a finished connection's protocols, through an
# exception it kept).
_FINITE_APIS: weakref.WeakValueDictionary[int, ApiConfig] = weakref.WeakValueDictionary()
_FINITE_KEPT = 4096
_finite_lock = threading.Lock()  # configurations are validated in threads (the management API's)


def _finite_api(api: ApiConfig) -> bool:
    if _FINITE_APIS.get(id(api)) is api:
        return True
    if not _finite(api.model_dump(mode="python", by_alias=True)):
        return False
    with _finite_lock:
        _FINITE_APIS[id(api)] = api
        while len(_FINITE_APIS) > _FINITE_KEPT:
            _FINITE_APIS.pop(next(iter(_FINITE_APIS)), None)  # (one gone meanwhile is no error)
    return True


def _finite(data: Any) -> bool:
    try:
        json.dumps(data, allow_nan=False, default=lambda value: None)  # values JSON lacks hold no float
    except (ValueError, TypeError, RecursionError):  # one there, or a shape json refuses: let the walk say
        return False
    return True


def _named_plugins(source: Any) -> list[str]:
    """The ``plugins`` of a configuration that did not validate, when that list itself is sound."""
    plugins = source.get("plugins") if isinstance(source, Mapping) else None
    if isinstance(plugins, list) and all(isinstance(p, str) and re.fullmatch(MODULE_NAME, p) for p in plugins):
        return plugins
    return []


# The top-level lists checked entry by entry when the whole configuration does not validate.
_LISTS: dict[str, type[BaseModel]] = {"apis": ApiConfig, "products": ProductConfig, "subscriptions": SubscriptionConfig}
_TOP_REF = re.compile(r"(?<![\w.\]])(apis|products|subscriptions)\[(\d+)\]")


def _check_what_validated(
    source: Any, exc: ValidationError, reported: list[str], check_policies: PolicyCheck
) -> list[str]:
    """Cross-field problems among the parts that did validate, so one bad field hides nothing else.

    Each top-level list keeps its valid entries (renumbered back to their places in the file);
    other top-level fields with errors fall back to their defaults.
    """
    if not isinstance(source, Mapping):
        return []
    broken = {error["loc"][0] for error in exc.errors() if error["loc"]}
    if any(len(error["loc"]) == 1 and error["loc"][0] in _LISTS for error in exc.errors()):
        return []  # a whole list is wrong (too long, not a list): nothing sound to cross-check
    partial: dict[str, Any] = {k: v for k, v in source.items() if k not in broken or k in _LISTS}
    places: dict[str, list[int]] = {}
    for key, model in _LISTS.items():
        entries = source.get(key)
        if key not in broken or not isinstance(entries, list):
            places[key] = list(range(len(entries))) if isinstance(entries, list) else []
            continue
        kept = [i for i, entry in enumerate(entries) if _valid(model, entry)]
        places[key], partial[key] = kept, [entries[i] for i in kept]
    try:
        config = GatewayConfig.model_validate(partial)
    except ValidationError:
        return []  # e.g. a list longer than allowed: nothing sound to cross-check
    # An entry dropped for its own errors must not also show up as "unknown" elsewhere. Its name is
    # the file's, unvalidated: only a string can be one (a list or a mapping is not even hashable).
    dropped = {
        name
        for key in _LISTS
        for i, entry in enumerate(source.get(key) or [])
        if isinstance(entry, Mapping)
        and i not in places[key]
        and isinstance(name := entry.get("name" if key != "subscriptions" else "id"), str)
    }
    found = []
    with deferred_imports():  # the configuration is invalid: import nothing
        checked = cross_check(config) + check_policies(config)
    for problem in checked:
        problem = _TOP_REF.sub(lambda m: f"{m.group(1)}[{places[m.group(1)][int(m.group(2))]}]", problem)
        if problem not in reported and not any(
            f"unknown API '{n}'" in problem or f"unknown product '{n}'" in problem for n in dropped
        ):
            found.append(problem)
    return found


def _valid(model: type[BaseModel], entry: Any) -> bool:
    try:
        model.model_validate(entry)
    except ValidationError:
        return False
    return True


def resolve_apps(config: GatewayConfig) -> list[str]:
    """Import the ``asgi:module:attr`` upstreams of a validated configuration; the problems found."""
    problems: list[str] = []
    for i, api in enumerate(config.apis):
        for k, upstream in enumerate(api.upstreams):
            if upstream.kind != "asgi" or upstream.app is not None:
                continue
            target = upstream.url.removeprefix("asgi:")
            try:
                app = import_object(target)
            except ValueError as exc:
                problems.append(f"apis[{i}].upstreams[{k}]: {exc}")
                continue
            if not is_asgi_app(app):
                problems.append(f"apis[{i}].upstreams[{k}]: '{target}' is not an ASGI app (an async callable)")
                continue
            object.__setattr__(upstream, "app", app)
    return problems


def is_asgi_app(app: Any) -> bool:
    """An ASGI 3 app: an async function, or an object whose ``__call__`` is one (not e.g. ``os.system``)."""
    while isinstance(app, functools.partial):
        app = app.func
    if inspect.isclass(app):
        return False  # calling a class builds an instance: ASGI 2 style, which the gateway does not run
    return callable(app) and (inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__))


__all__ = [
    "PolicyCheck",
    "is_asgi_app",
    "parse_config",
    "resolve_apps",
]
