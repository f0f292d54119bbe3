"""The message stage: what a message policy works with (``context``) and the per-direction pipeline
the relay runs each message through (``pipeline``).

Policy authors import from :mod:`asgi_ws_gateway.policies`, not from here.
"""
