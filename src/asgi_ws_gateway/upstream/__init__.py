"""The upstream leg: the request a connector opens (Sans-I/O) and the connectors that open it.

``request`` builds the upstream request (``headers``: which headers cross, each way; ``proxy_headers``:
which names belong to a proxy) and ``checks`` vets it before any connect; ``base`` is what every
connector provides; ``websockets_client`` (``ws://``/``wss://``) and ``inprocess`` (an ASGI app in this
process: ``inprocess_connection``, ``inprocess_messages``) are the two connectors; ``balancing`` spreads
handshakes over several backends.
The passthrough's raw connector lives with the passthrough (``passthrough/raw_upstream.py``).
"""
