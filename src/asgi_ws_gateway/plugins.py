"""Extension modules: imported before a configuration is validated, so their policy types are known.

A plugin is a module that registers policy types when imported (``register_policy``,
``register_message_policy``). The operator names plugins in the configuration (``plugins:``) or on
the command line (``--plugin MODULE``); ``run`` passes the command line's to its workers through
``ASGI_WS_GATEWAY_PLUGINS``, since uvicorn starts each worker in a fresh interpreter.

Each module is imported once per process, by its absolute name, from ``sys.path`` (the command line
puts the working directory first, as uvicorn does for apps). The management API never imports one:
it validates with ``load_config(..., import_plugins=False)``, which accepts only modules already
loaded here.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Sequence

from .errors import ConfigError

logger = logging.getLogger(__name__)

PLUGINS_ENV = "ASGI_WS_GATEWAY_PLUGINS"
"""Comma-separated module names ``run --plugin`` hands to each worker."""

MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
"""An absolute dotted module name (no relative imports, no ``module:attribute``)."""

MAX_PLUGINS = 64
"""Plugin modules one process imports (config.limits.MAX_PLUGINS: the configuration's ``plugins``, ``--plugin``)."""
MAX_MODULE = 256
"""Characters of a plugin's module name (config.limits.MAX_MODULE)."""

_loaded: set[str] = set()


def load_plugins(modules: Sequence[str], *, field: str = "plugins", allow_import: bool = True) -> None:
    """Import each module once per process, in order.

    Args:
        modules: absolute module names (``example_app.plugins``).
        field: how problems name the setting: ``plugins`` gives ``plugins[0]: ...``; an option such
            as ``--plugin`` gives ``--plugin name: ...``.
        allow_import: False (the management API): import nothing; a module not already loaded as
            a plugin is a problem.

    Raises:
        ConfigError: naming every module that could not be imported, with its error.
    """
    problems: list[str] = []
    if len(modules) > MAX_PLUGINS:  # $ASGI_WS_GATEWAY_PLUGINS is read here unchecked by argparse or the models
        raise ConfigError([f"{field}: {len(modules):,} modules: at most {MAX_PLUGINS}"])
    for i, name in enumerate(modules):
        if len(name) > MAX_MODULE:  # never quoted: a problem line of megabytes
            problems.append(f"{field}[{i}]: a name of {len(name):,} characters: at most {MAX_MODULE}")
            continue
        where = f"{field}[{i}]" if field.isidentifier() else f"{field} {name}"
        if name in _loaded:
            continue
        if not re.fullmatch(MODULE_NAME, name):  # fullmatch: "$" alone would admit a trailing newline
            problems.append(f"{where}: '{name}' is not a module name (package.module)")
            continue
        if not allow_import:
            problems.append(f"{where}: '{name}' is not loaded: plugins come only from the configuration file "
                            "or --plugin at start-up")  # fmt: skip
            continue
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:  # a plugin may fail any way at import: report it, no traceback
            problems.append(f"{where}: cannot import '{name}': {type(exc).__name__}: {exc}")
            continue
        _loaded.add(name)
        logger.info("loaded plugin %s", name)
    if problems:
        raise ConfigError(problems)


def plugins_from_env() -> list[str]:
    """The modules ``run --plugin`` named (``$ASGI_WS_GATEWAY_PLUGINS``), in order."""
    return [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]


def loaded_plugins() -> list[str]:
    """Names of the plugin modules this process imported, sorted."""
    return sorted(_loaded)


__all__ = [
    "MAX_MODULE",
    "MAX_PLUGINS",
    "MODULE_NAME",
    "PLUGINS_ENV",
    "load_plugins",
    "loaded_plugins",
    "plugins_from_env",
]
