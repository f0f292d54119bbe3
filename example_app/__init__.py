"""A runnable example: a FastAPI app with the gateway in front of an in-process WebSocket upstream.

``python -m example_app`` serves it on http://127.0.0.1:8000/ (see ``main.py`` and ``gateway.yaml``).
"""
