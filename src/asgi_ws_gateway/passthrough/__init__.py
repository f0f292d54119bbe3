"""The passthrough: frames spliced between the client's and the upstream's sockets without parsing
messages (``splice``, each side a ``sides.Side``), the Sans-I/O frame scanner that checks them
(``frames``, its rules in ``..frame_rules``), the frames the gateway writes itself (``frame_encoding``),
the frame relay that runs message policies on them (``framed``, ``assembler``, ``inflate``), the raw
upstream handshake (``raw_upstream``) and the ASGI extension the server protocol offers
(``asgi_extension``).
"""
