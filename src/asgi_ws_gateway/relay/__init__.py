"""The relay: two pumps between an accepted client and its upstream connection (``pumps``), the
message-policy variant (``policy``) and the watchdog and registry of live connections (``lifecycle``).
"""
