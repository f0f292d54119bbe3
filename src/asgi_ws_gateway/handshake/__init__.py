"""The onHandshake stage: the context policies read and change, the pipeline that runs them, and
the answers a denied handshake gets (``responses``), with the refusal log (``refusals``) and the
request-head limits checked before any policy (``header_limits``).

Policy authors import from :mod:`asgi_ws_gateway.policies`, not from here.
"""
