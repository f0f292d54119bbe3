"""Benchmarks: the gateway side by side with direct, nginx and the Python proxies, in one run.

Run ``python -m bench`` (``--quick`` for a smoke run of a few seconds per scenario); see
``docs/performance.md`` for what is measured and the latest results.

Other scripts in this folder reuse the pieces:

* :mod:`bench.paths` — what can be measured (``PathSpec``, ``uvicorn_path`` for any app factory);
* :mod:`bench.scenarios` — one measurement of one path (``Scenario``, ``measure``);
* :mod:`bench.procs` — pinned processes with their CPU time and RSS (``Service``);
* :mod:`bench.loadgen` / :mod:`bench.upstream_server` — the picows load generator and echo upstream;
* :mod:`bench.aggregate` / :mod:`bench.stats` — medians with min-max, ratios, scaling, issues 13 and 14's targets;
* :mod:`bench.compare` — A/B of this checkout's gateway against another git revision's;
* :mod:`bench.profile` — py-spy on a path's proxy under load;
* :mod:`bench.picows_upstream` — evaluation only: a picows upstream leg for the gateway.
"""
