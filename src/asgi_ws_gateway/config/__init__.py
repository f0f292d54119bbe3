"""The gateway's configuration: typed models, loading from YAML/JSON/dict, errors by field path.

A configuration is validated eagerly: :func:`~asgi_ws_gateway.load_config` either returns a
:class:`GatewayConfig` whose cross-field rules hold (unique names, non-overlapping paths, upstream
URL placeholders that the API path defines) or raises :class:`~asgi_ws_gateway.errors.ConfigError`
listing every problem as ``field.path: what is wrong``.

One job per module, each importing only modules listed before it:

- ``limits``: the size limits (``MAX_*``, ``MIB``) and ``bounded``, their check on free-form data;
- ``problems``: pydantic's errors as ``field.path: message`` (``describe_errors``, ``shorten``);
- ``hosts``: host patterns (``parse_host``, ``host_matches``, ``HostPattern``);
- ``fields``: the models' base class and shared field types; the schema's policy placeholders;
- ``apis``, ``products``, ``settings``, ``gateway``: the models, ``GatewayConfig`` the root;
- ``picked_hosts``: which handshake values pick a ``set-backend-service`` host (read with ``public_suffixes``);
- ``checks``: cross-field rules and warnings; ``files``: reading a file;
- ``parsing``: ``parse_config``, the order of validation, and the imports of in-process apps.

Only the models of the package's public API are re-exported here; everything else is imported
from its module.
"""

from .apis import ApiConfig, UpstreamConfig
from .gateway import GatewayConfig
from .settings import TelemetryConfig

__all__ = ["ApiConfig", "GatewayConfig", "TelemetryConfig", "UpstreamConfig"]
