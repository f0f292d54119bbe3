"""The supervisor of ``run --workers N`` between a stop signal's arrival and its next turn, and when a dead
worker's replacement fails its start-up (pure logic: workers as it sees them, no processes).

uvicorn's supervisor acts on a signal at the next turn of its loop, and checks its workers first: a
worker that ended meanwhile because of that signal (the second Ctrl+C: forced, exit 8) was replaced as
one that died, and its status lost from those ``run`` chooses its own from (exit 0 after a forced quit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from asgi_ws_gateway.server import startup_output
from asgi_ws_gateway.server.serving import EXIT_FORCED
from asgi_ws_gateway.server.supervisor import Supervisor, _Vacant


class _Worker:
    """A worker as the supervisor sees one: running (``exitcode`` None) or ended; ``on_check`` runs as it
    is checked (a signal arriving then)."""

    pid = 4242

    def __init__(self, exitcode: int | None = None, on_check: Callable[[], None] | None = None) -> None:
        self.exitcode = exitcode
        self.on_check = on_check

    def is_alive(self, timeout: float = 5) -> bool:
        if self.on_check is not None:
            self.on_check()
        return self.exitcode is None

    def kill(self) -> None:
        pass

    def terminate(self) -> None:
        self.exitcode = -signal.SIGTERM

    def join(self) -> None:
        pass


class _Started(_Worker):
    """A replacement the supervisor started."""

    def __init__(self, config: object, sockets: object) -> None:
        super().__init__()

    def start(self) -> None:
        pass


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> Iterator[Supervisor]:
    """A supervisor of two workers (set by each test), its signal handlers those of the test process after."""
    handlers = {sig: signal.getsignal(sig) for sig in multiprocess.SIGNALS}
    monkeypatch.setattr(multiprocess, "Process", _Started)
    try:
        yield Supervisor(uvicorn.Config("app:app", workers=2, log_config=None), sockets=[])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _hold(supervisor: Supervisor, *workers: _Worker | _Vacant) -> None:
    supervisor.processes = list(workers)  # type: ignore[arg-type]


def _held(supervisor: Supervisor) -> list[object]:
    return list(supervisor.processes)


def test_a_worker_that_ended_as_the_stop_came_keeps_its_exit_status(supervisor: Supervisor) -> None:
    """Ctrl+C came while the first worker was checked; the second, forced meanwhile, had exited 8."""
    checked_as_ctrl_c_comes = _Worker(on_check=lambda: supervisor.signal_queue.append(signal.SIGINT))
    _hold(supervisor, checked_as_ctrl_c_comes, _Worker(EXIT_FORCED))
    supervisor.keep_subprocess_alive()
    assert EXIT_FORCED in supervisor.exit_codes()


def test_no_worker_is_replaced_once_a_stop_is_queued(supervisor: Supervisor) -> None:
    forced = _Worker(EXIT_FORCED)
    _hold(supervisor, _Worker(), forced)
    supervisor.signal_queue.append(signal.SIGINT)
    supervisor.keep_subprocess_alive()
    assert _held(supervisor)[1] is forced  # was: a new worker, started only to be stopped
    assert EXIT_FORCED in supervisor.exit_codes()


def test_a_worker_that_died_while_serving_is_replaced_and_not_counted(supervisor: Supervisor) -> None:
    _hold(supervisor, _Worker(), _Worker(1))
    supervisor.keep_subprocess_alive()
    assert isinstance(_held(supervisor)[1], _Started)
    assert supervisor.exit_codes() == {None}


def test_a_replacement_that_fails_its_start_up_leaves_its_place_vacant_while_another_serves(
    supervisor: Supervisor,
) -> None:
    """Before: uvicorn stopped every worker (the one serving too) and run exited 7."""
    _hold(supervisor, _Worker(), _Worker(STARTUP_FAILURE))
    supervisor.keep_subprocess_alive()
    assert isinstance(_held(supervisor)[1], _Vacant)
    assert not supervisor.should_exit.is_set()
    assert supervisor.exit_codes() == {None}


def test_a_vacant_place_is_tried_again_once_its_time_comes(supervisor: Supervisor) -> None:
    vacant = _Vacant(4243, retry_at=float("inf"))
    _hold(supervisor, _Worker(), vacant)
    supervisor.keep_subprocess_alive()
    assert _held(supervisor)[1] is vacant
    vacant.retry_at = 0.0
    supervisor.keep_subprocess_alive()
    assert isinstance(_held(supervisor)[1], _Started)


def test_a_worker_run_started_with_that_fails_its_start_up_stops_the_gateway(supervisor: Supervisor) -> None:
    failed = _Worker(STARTUP_FAILURE)
    _hold(supervisor, _Worker(), failed)
    supervisor.first = [*_held(supervisor)]
    supervisor.keep_subprocess_alive()
    assert supervisor.should_exit.is_set()
    assert STARTUP_FAILURE in supervisor.exit_codes()


def test_a_replacement_that_fails_with_no_worker_serving_stops_the_gateway(supervisor: Supervisor) -> None:
    _hold(supervisor, _Worker(STARTUP_FAILURE), _Vacant(4243, retry_at=float("inf")))
    supervisor.keep_subprocess_alive()
    assert supervisor.should_exit.is_set()


@pytest.mark.parametrize(
    ("exitcode", "said"),
    [
        (-signal.SIGKILL, "died (killed by SIGKILL)"),
        (1, "died (exit status 1)"),
        (None, "did not answer its health check"),
    ],
    ids=["killed", "exited", "hung"],
)
def test_a_worker_lost_while_serving_is_an_error_saying_how(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture, exitcode: int | None, said: str
) -> None:
    """uvicorn said "Child process [n] died" at INFO: an operator alerting on errors missed every crash."""

    class _Hung(_Worker):
        def is_alive(self, timeout: float = 5) -> bool:
            return False

    _hold(supervisor, _Worker(), _Hung() if exitcode is None else _Worker(exitcode))
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        supervisor.keep_subprocess_alive()
    lost = [record for record in caplog.records if "connections were dropped" in record.getMessage()]
    assert [record.levelno for record in lost] == [logging.ERROR]
    assert said in lost[0].getMessage()
    assert isinstance(_held(supervisor)[1], _Started)


def test_a_worker_that_ended_on_its_own_after_draining_is_a_warning_saying_so(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    """Exit status 0 is a drain completed (a SIGTERM sent to that worker alone): before, an ERROR said
    its connections were dropped."""
    _hold(supervisor, _Worker(), _Worker(0))
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        supervisor.keep_subprocess_alive()
    said = [record for record in caplog.records if "Child process [4242]" in record.getMessage()]
    assert [(record.levelno, record.getMessage()) for record in said] == [
        (logging.WARNING, "Child process [4242] ended on its own after draining its connections (exit status 0); "
         "starting another")
    ]  # fmt: skip
    assert isinstance(_held(supervisor)[1], _Started)


def test_a_stop_that_finds_a_vacant_place_tried_again_is_no_start_up_failure(supervisor: Supervisor) -> None:
    """SIGTERM while a vacant place's new worker starts (the file still invalid: it exits 3 as it is
    stopped): run stopped as asked, not 7 'could not start serving' (it was, every 10 s a few seconds long)."""
    _hold(supervisor, _Worker(), _Worker(STARTUP_FAILURE))  # the second: a replacement, not a first worker
    supervisor.signal_queue.append(signal.SIGTERM)
    supervisor.keep_subprocess_alive()
    assert STARTUP_FAILURE not in supervisor.exit_codes()


def test_a_replacement_whose_failure_stopped_the_gateway_counts(supervisor: Supervisor) -> None:
    _hold(supervisor, _Worker(STARTUP_FAILURE), _Vacant(4243, retry_at=float("inf")))
    supervisor.keep_subprocess_alive()
    assert STARTUP_FAILURE in supervisor.exit_codes()


def test_each_failed_try_at_a_vacant_place_doubles_the_wait_up_to_five_minutes(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a try every 10 s for as long as the file stayed invalid, two ERROR lines and a start-up each."""
    _hold(supervisor, _Worker(), _Worker(STARTUP_FAILURE))
    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        supervisor.keep_subprocess_alive()
        for _ in range(6):
            vacant = _held(supervisor)[1]
            assert isinstance(vacant, _Vacant)
            vacant.retry_at = 0.0
            supervisor.keep_subprocess_alive()  # tried again: the file still invalid
            retried = _held(supervisor)[1]
            assert isinstance(retried, _Started)
            retried.exitcode = STARTUP_FAILURE
            supervisor.keep_subprocess_alive()
    waits = [r.getMessage().split("tried again in ")[1] for r in caplog.records if "tried again in" in r.getMessage()]
    assert waits == [f"{s} s (or at a SIGHUP)" for s in (10, 20, 40, 80, 160, 300, 300)]


class _FailsToStart(_Started):
    """A restart's new worker that fails its start-up (the file still invalid)."""

    pid = 4300

    def wait_until_ready(self, timeout: float, should_exit: object = None) -> bool:
        self.exitcode = STARTUP_FAILURE
        return False


def test_a_restart_stopped_at_a_vacant_place_names_no_worker_kept(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 'keeping worker [4243]', the replacement that had failed and was long gone."""
    monkeypatch.setattr(multiprocess, "Process", _FailsToStart)
    vacant = _Vacant(4243, retry_at=float("inf"))
    _hold(supervisor, vacant, _Worker())
    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        supervisor.restart_all()
    assert [r.getMessage() for r in caplog.records] == [
        "New child process [4300] failed to start; leaving its place vacant and aborting the restart."
    ]
    assert _held(supervisor)[0] is vacant


def test_sigttou_gives_up_a_vacant_place_before_a_serving_worker(supervisor: Supervisor) -> None:
    """Before: uvicorn stopped the last worker, here the only one serving, and kept the vacant place: no
    worker served until that place's next try failed (up to 5 minutes) and stopped the gateway."""
    serving = _Worker()
    _hold(supervisor, _Vacant(4243, retry_at=float("inf")), serving)
    supervisor.handle_ttou()
    assert _held(supervisor) == [serving]
    assert serving.exitcode is None
    assert supervisor.processes_num == 1


def test_a_start_up_output_file_that_cannot_be_made_leaves_the_output_unheld(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A full or read-only disk: the supervisor starts the replacement anyway (its output written as it
    comes), and a worker whose file is gone does not redirect its standard error (both raised before)."""

    def full(**_: object) -> tuple[int, str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full)
    assert startup_output.new_holder() is None
    held = startup_output.HeldStartup((str(tmp_path / "gone.out"), str(tmp_path / "gone.log")))
    held.keep()
    held.release()
    assert not (tmp_path / "gone.log").exists()


def test_a_start_up_output_file_put_back_by_another_is_not_read(tmp_path: Path) -> None:
    """Once a worker served, its file is gone, but the supervisor still takes it when the worker ends (at the
    stop): another user who made a file or a symlink of that name in /tmp had it shown as the worker's output
    (a forged log, or a file the gateway can read, such as a key, written to its log) and removed."""
    secret = tmp_path / "secret.pem"
    secret.write_text("-----BEGIN PRIVATE KEY-----\n")
    holder = startup_output.new_holder()
    assert holder is not None
    for path in holder:
        os.unlink(path)  # the worker served: released
    path = holder[1]
    os.symlink(secret, path)
    try:
        assert startup_output.take(holder) == (b"", b"")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    assert secret.exists()
    os.link(secret, path)  # a hard link to a file of the gateway's user
    try:
        assert startup_output.take(holder) == (b"", b"")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    forged = startup_output.new_holder()
    assert forged is not None
    Path(forged[1]).write_text("CRITICAL: forged\n")
    if os.getuid() == 0:  # another user's (as root, as CI runs, it can be made so)
        os.chown(forged[1], 65534, 65534)
    try:
        assert startup_output.take(forged) == (b"", b"" if os.getuid() == 0 else b"CRITICAL: forged\n")
    finally:
        for path in forged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
