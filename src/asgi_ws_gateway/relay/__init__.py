"""The relay: two pumps between an accepted client and its upstream connection, each with an optional
message-policy step (``pumps``; the policies' own tasks: ``policy_tasks``); the counters and close codes
it shares with the passthrough splice (``stats``, ``close_codes``); the watchdog and registry of live
connections (``lifecycle``).
"""
