"""The passthrough: frames spliced between the client's and the upstream's sockets without parsing
messages (``splice``), the Sans-I/O frame scanner that checks them (``frames``) and the raw upstream
handshake (``raw_upstream``).
"""
