"""A configuration's APIs, once validated, are not kept alive by the validation (config/parsing.py)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from asgi_ws_gateway.config.parsing import parse_config


def test_an_api_validated_and_dropped_frees_its_in_process_app() -> None:
    """The store of APIs found free of infinities held each of the last 4,096 strongly: a dropped
    gateway's (or a replaced change's) APIs stayed alive, with their in-process apps and whatever those
    held — in a test run, a finished connection's protocol, through an exception an app kept."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    freed = weakref.ref(app)
    config = parse_config({"apis": [{"name": "a", "path": "/ws/a", "upstreams": [{"app": app}]}]})
    assert config.apis[0].upstreams[0].app is app
    del config, app
    gc.collect()
    assert freed() is None
