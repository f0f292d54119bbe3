"""Every URL the operator writes keeps the upstream URL's rules at ``check``, not at each handshake.

``check`` said valid to upstream URLs that ``run`` then died on (a ValueError traceback, exit 1: a
port of 99999 or -1, ``ws://[::1/x``, CR/LF in the authority), that refused every handshake with a
400 blaming the client (no host, port 0, CR/LF or a space in the path, a fragment), or that failed
every handshake with a 500 (a ``set-backend-service`` base URL ``ws://[::1``, or one that reached an
API with an in-process upstream). The file is refused now: exit 2 with the field path, before
anything listens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway.errors import ConfigError, HandshakeDenied
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.state.memory import MemoryState
from asgi_ws_gateway.upstream.checks import check_upstream_request
from support.processes import SRC, ServerProcess
from support.servers import free_port

IN_PROCESS = "asgi:support.apps:echo_app"
REDIRECT = {"set-backend-service": {"base_url": "ws://127.0.0.1:18901"}}

BAD_UPSTREAMS = {
    "ws://127.0.0.1:99999/x": "port that is not a number from 1 to 65535",
    "ws://127.0.0.1:-1/x": "port that is not a number from 1 to 65535",
    "ws://[::1/x": "is not a valid URL",
    "ws://[zz::1]:9000/x": "is not a valid URL",
    "ws://127.0.0.1:18901\r\nX-Injected: host/x": "space or a control character",
    "ws://": "host that is not a host name",
    "ws:///path": "host that is not a host name",
    "ws://h:0/x": "port that is not a number from 1 to 65535",
    "ws://127.0.0.1:18901/x\r\nX-Injected: yes": "space or a control character",
    "ws://127.0.0.1:18901/x y": "space or a control character",
    "ws://127.0.0.1:18901/x\ty": "space or a control character",
    "wss://127.0.0.1:18901/x#frag": "must not have a fragment",
    "ws://127.0.0.1:18901/a/../b": "dot segment",
    "ws://127.0.0.1:18901/caf\u00e9": "path with characters a URL cannot carry",
    "ws://127.0.0.1:18901/rooms/{room}?v=a b": "space or a control character",
}
BAD_BASE_URLS = {
    "ws://127.0.0.1:99999": "port that is not a number from 1 to 65535",
    "ws://[::1": "is not a valid URL",
    "ws://127.0.0.1:0": "port that is not a number from 1 to 65535",
    "ws://127.0.0.1:18901/x#frag": "must not have a fragment",
    "ws://127.0.0.1:18901/x y": "space or a control character",
    "ws://127.0.0.1:18901/x?tenant=a": "must not have a query",
    "ws://chat-{jwt.region}.internal:99999": "port that is not a number from 1 to 65535",
    "ws://chat-{jwt.region}-.internal": "host that is not a host name",
    "ws://[{jwt.ip}]:9000": "is not a valid URL",
}


def _api(upstream: Any, *, name: str = "a", path: str = "/ws/{room}", **more: Any) -> dict[str, Any]:
    return {"name": name, "path": path, "upstreams": [upstream], **more}


def _write(tmp: Path, config: dict[str, Any]) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _problems(tmp: Path, config: dict[str, Any]) -> list[str]:
    """The problems ``check`` reports for ``config`` written to a file (the CLI's own call)."""
    with pytest.raises(ConfigError) as caught:
        load_policies(_write(tmp, config), store=lambda config: MemoryState())
    return caught.value.problems


def _valid(tmp: Path, config: dict[str, Any]) -> None:
    load_policies(_write(tmp, config), store=lambda config: MemoryState())


@pytest.mark.parametrize("url", list(BAD_UPSTREAMS))
def test_an_upstream_url_no_handshake_could_use_is_refused_by_check(tmp_path: Path, url: str) -> None:
    """Each finding's upstream URL: one problem on apis[0].upstreams[0].url saying what is wrong."""
    (problem,) = _problems(tmp_path, {"apis": [_api(url)]})
    assert problem.startswith("apis[0].upstreams[0].url: "), problem
    assert BAD_UPSTREAMS[url] in problem


@pytest.mark.parametrize("base_url", list(BAD_BASE_URLS))
def test_a_base_url_no_handshake_could_use_is_refused_by_check(tmp_path: Path, base_url: str) -> None:
    """set-backend-service's base_url, in its fixed text (placeholders: no value could make it valid)."""
    policy = {"set-backend-service": {"base_url": base_url}}
    (problem,) = _problems(tmp_path, {"apis": [_api("ws://127.0.0.1:18901/x", policies=[policy])]})
    assert problem.startswith("apis[0].policies[0].set-backend-service.base_url: "), problem
    assert BAD_BASE_URLS[base_url] in problem


def test_an_in_process_path_follows_the_rules_too(tmp_path: Path) -> None:
    """An asgi: upstream's ``path`` is the in-process URL: a space in it refused every handshake."""
    (problem,) = _problems(tmp_path, {"apis": [_api({"url": IN_PROCESS, "path": "/rooms/{room} x"})]})
    assert problem.startswith("apis[0].upstreams[0].path: has a space or a control character"), problem


def test_problems_never_repeat_the_url(tmp_path: Path) -> None:
    """The message names the field and the rule: a query's credential is not echoed."""
    (problem,) = _problems(tmp_path, {"apis": [_api("ws://127.0.0.1:99999/x?token=hunter2secret")]})
    assert "hunter2secret" not in problem and "99999" not in problem


@pytest.mark.parametrize(
    "scope",
    ["api", "global", "product", "open-product", "choose-branch", "choose-otherwise"],
)
def test_set_backend_service_reaching_an_in_process_upstream_is_refused(tmp_path: Path, scope: str) -> None:
    """Every way the policy reaches an API with an asgi: upstream: a 500 at every handshake, now a problem."""
    in_process = _api(IN_PROCESS, name="inner", path="/inner")
    network = _api("ws://127.0.0.1:18901/x", name="outer", path="/outer")
    choose = {"choose": {"when": [{"if": {"ref": "api.name", "equals": "inner"}, "policies": [REDIRECT]}]}}
    config: dict[str, Any] = {"apis": [in_process, network]}
    where = {
        "api": "apis[0].policies[0].set-backend-service",
        "global": "policies[0].set-backend-service",
        "product": "products[0].policies[0].set-backend-service",
        "open-product": "products[0].policies[0].set-backend-service",
        "choose-branch": "policies[0].choose.when[0].policies[0].set-backend-service",
        "choose-otherwise": "policies[0].choose.otherwise[0].set-backend-service",
    }[scope]
    if scope == "api":
        in_process["policies"] = [REDIRECT]
    elif scope in ("product", "open-product"):
        config["products"] = [{"name": "p", "apis": ["inner"], "policies": [REDIRECT],
                               "subscription_required": scope == "product"}]  # fmt: skip
    elif scope == "choose-branch":
        config["policies"] = [choose]
    elif scope == "choose-otherwise":
        config["policies"] = [{"choose": {**choose["choose"], "otherwise": [REDIRECT]}}]
        choose["choose"]["when"][0]["policies"] = []
    else:
        config["policies"] = [REDIRECT]
    problems = _problems(tmp_path, config)
    assert [p for p in problems if "in-process" in p] == [p for p in problems if p.startswith(where + ": ")]
    (problem,) = [p for p in problems if p.startswith(where + ": ")]
    assert "API 'inner'" in problem and "apis[0].upstreams[0]" in problem and IN_PROCESS in problem
    assert "outer" not in problem


def test_set_backend_service_that_no_in_process_api_runs_is_accepted(tmp_path: Path) -> None:
    """Skipped by the in-process API, or only in a product of network APIs: nothing to refuse."""
    named = {"set-backend-service": {**REDIRECT["set-backend-service"], "name": "to-eu"}}
    _valid(tmp_path, {
        "apis": [_api(IN_PROCESS, name="inner", path="/inner", skip_policies=["to-eu"]),
                 _api("ws://127.0.0.1:18901/x", name="outer", path="/outer")],
        "policies": [named],
        "products": [{"name": "p", "apis": ["outer"], "policies": [REDIRECT]}],
    })  # fmt: skip


@pytest.mark.parametrize(
    "api",
    [
        _api("ws://[::1]:9000/x"),
        _api("wss://[2001:db8::1]/rooms/{room}?v=1"),
        _api("ws://chat.internal:9443/rooms/{room}",
             policies=[{"set-backend-service": {"base_url": "ws://chat-{jwt.region}.internal:9443"}}]),
        _api("ws://chat.internal:9443/rooms/{room}",
             policies=[{"set-backend-service": {"base_url": "wss://[::1]:9443/prefix/"}}]),
        _api("ws://127.0.0.1:18901/a%20b/{room}", path="/ws/{room}"),
        _api("ws://localhost./x"),
        _api("ws://h:/x"),
        _api(IN_PROCESS),
        _api({"url": IN_PROCESS, "path": "/rooms/{room}"}),
        _api("ws://my_service:8000/ws"),  # a Docker Compose service name (a re-attack: refused at first)
        _api("ws://my_service.internal:8000/x"),
    ],
)  # fmt: skip
def test_valid_urls_are_still_accepted(tmp_path: Path, api: dict[str, Any]) -> None:
    """IPv6 literals, templates (in the path; in set-backend-service's host too), asgi: upstreams."""
    _valid(tmp_path, {"apis": [api]})


def test_the_runtime_refuses_a_control_character_urlsplit_would_drop() -> None:
    """The shared rules, at the handshake: a tab or CR/LF in a built URL is a 400, not silently removed."""
    for url in ("ws://up:9000/a\tb", "ws://up:9000/a\r\nb", " ws://up:9000/a"):
        with pytest.raises(HandshakeDenied) as caught:
            check_upstream_request(url, [], in_process=False)
        assert (caught.value.status, caught.value.reason) == (400, "bad_request")
    check_upstream_request("ws://[::1]:9000/a", [], in_process=False)


def _all_bad(tmp: Path) -> Path:
    apis = [_api(url, name=f"u{i}", path=f"/u{i}") for i, url in enumerate(BAD_UPSTREAMS)]
    for i, url in enumerate(BAD_BASE_URLS):
        policy = {"set-backend-service": {"base_url": url}}
        apis.append(_api("ws://127.0.0.1:18901/x", name=f"b{i}", path=f"/b{i}", policies=[policy]))
    apis.append(_api(IN_PROCESS, name="inner", path="/inner", policies=[REDIRECT]))
    return _write(tmp, {"apis": apis})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path])}  # support.apps importable
    return subprocess.run([sys.executable, "-m", "asgi_ws_gateway", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)  # fmt: skip


def test_check_exits_2_naming_every_bad_url(tmp_path: Path) -> None:
    """``python -m asgi_ws_gateway check``: exit 2, each field path on stderr, no traceback."""
    done = _cli("check", str(_all_bad(tmp_path)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for i in range(len(BAD_UPSTREAMS)):
        assert f"apis[{i}].upstreams[0].url: " in done.stderr
    for i in range(len(BAD_BASE_URLS)):
        assert f"apis[{len(BAD_UPSTREAMS) + i}].policies[0].set-backend-service.base_url: " in done.stderr
    assert f"apis[{len(BAD_UPSTREAMS) + len(BAD_BASE_URLS)}].policies[0].set-backend-service: " in done.stderr


CRASHED_RUN = ["ws://127.0.0.1:99999/x", "ws://127.0.0.1:-1/x", "ws://[::1/x", "ws://h:1\r\nX-Injected: host/x"]


@pytest.mark.parametrize("url", CRASHED_RUN)
def test_run_exits_2_before_listening(tmp_path: Path, url: str) -> None:
    """``run`` on a URL it used to die on at start-up (ValueError, exit 1): exit 2, never listening."""
    port = free_port()
    config = _write(tmp_path, {"apis": [_api(url)]})
    with ServerProcess(["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port)], port=port) as server:
        assert server.wait_exit() == 2
        output = server.output()
    assert "apis[0].upstreams[0].url: " in output and "Traceback" not in output
    assert "running on" not in output.lower() and "startup complete" not in output.lower()


def test_a_choose_branch_for_another_api_by_name_is_not_refused(tmp_path: Path) -> None:
    """A global ``choose`` redirecting only API 'outer' (``if: {ref: api.name, equals: outer}``) never runs for
    the in-process API beside it (a re-attack: the first check refused it, though it served as meant)."""
    branch = {"if": {"ref": "api.name", "equals": "outer"}, "policies": [REDIRECT]}
    others = {"if": [{"ref": "api.name", "in": ["outer", "other"]}], "policies": [REDIRECT]}
    _valid(tmp_path, {
        "apis": [_api(IN_PROCESS, name="inner", path="/inner"),
                 _api("ws://127.0.0.1:18901/x", name="outer", path="/outer")],
        "policies": [{"choose": {"when": [branch, others]}}],
    })  # fmt: skip
    branch = {"if": {"ref": "api.name", "not_equals": "outer"}, "policies": [REDIRECT]}
    problems = _problems(tmp_path, {
        "apis": [_api(IN_PROCESS, name="inner", path="/inner"),
                 _api("ws://127.0.0.1:18901/x", name="outer", path="/outer")],
        "policies": [{"choose": {"when": [branch]}}],
    })  # fmt: skip
    assert [p for p in problems if "in-process" in p and "API 'inner'" in p], problems
