"""Test infrastructure: real servers on 127.0.0.1, client helpers, ASGI apps and Autobahn runs.

Modules: ``servers`` (``UvicornServer``, ``free_port``; re-exports ``UpstreamServer``), ``upstream``
(the scripted ``websockets`` upstream), ``clients``, ``apps`` (``echo_app``), ``conformance`` and
``otlp`` (a real OTLP receiver, gRPC and HTTP/protobuf), ``gateway`` (``ProbedGateway`` and the
scripted upstream's routes), ``management`` (a managed gateway, the standalone process), ``policies``
(handshake contexts and policies without a server), ``plugins`` and ``telemetry`` (OTLP export set-up).
"""
