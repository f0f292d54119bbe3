"""The upstream leg: the request a connector opens (Sans-I/O) and the connectors that open it.

``request`` builds the upstream request and ``checks`` vets it before any connect; ``base`` is what
every connector provides; ``websockets_client`` (``ws://``/``wss://``) and ``inprocess`` (an ASGI app
in this process) are the two connectors; ``balancing`` spreads handshakes over several backends.
The passthrough's raw connector lives with the passthrough (``passthrough/raw_upstream.py``).
"""
