"""The command line started in a directory another user can write (``/tmp``): a module of theirs there is
never imported (real ``asgi-ws-gateway`` processes).

The command line puts the working directory first on ``sys.path``, as uvicorn does for apps, so that
``asgi:`` upstreams, plugins, ``--ws`` classes and ``--log-config`` handlers import from it. Before, it did
so in any directory: started in ``/tmp``, ``check`` and ``schema`` ran another user's ``pydantic.py`` and
``run`` their ``uvicorn.py`` (as the operator's user, root too), ahead of the installed packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.processes import EXE, ServerProcess, cli_env
from support.servers import free_port

PLANTED = ("pydantic", "uvicorn", "yaml", "secrets", "multiprocessing", "websockets", "myplugin")
"""What another user puts in the directory: packages the command imports after it starts, a standard module,
the one that starts ``run``'s workers, and a plugin name."""
WARNING = "is not on the import path: other users can write it"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can write, sticky, as ``/tmp`` is, holding another user's modules."""
    directory = Path(tempfile.mkdtemp(prefix="gw-cwd-", dir="/tmp"))
    directory.chmod(0o1777)
    for name in PLANTED:
        (directory / f"{name}.py").write_text(f"open({str(directory / f'RAN-{name}')!r}, 'w').close()\n")
    (directory / "gateway.yaml").write_text('apis:\n  - name: a\n    path: /a\n    upstreams: ["ws://127.0.0.1:9/x"]\n')
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _wait_for(condition: Callable[[], bool], server: ServerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline and server.process.poll() is None, server.output()
        time.sleep(0.1)


def _ran(directory: Path) -> list[str]:
    return sorted(path.name.removeprefix("RAN-") for path in directory.glob("RAN-*"))


@pytest.mark.parametrize("command", [["check", "gateway.yaml"], ["schema"], ["check", "gateway.yaml", "--json"]])
def test_check_and_schema_in_a_directory_every_user_can_write_import_nothing_from_it(
    shared_dir: Path, command: list[str]
) -> None:
    """Before: exit 1, their pydantic.py ran."""
    done = subprocess.run([str(EXE), *command], cwd=shared_dir, env=cli_env(), capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert (_ran(shared_dir), done.returncode) == ([], 0), done.stderr
    assert f"warning: the working directory {shared_dir} {WARNING} (mode 1777)" in done.stderr


def test_run_and_its_workers_in_a_directory_every_user_can_write_import_nothing_from_it(shared_dir: Path) -> None:
    """Before: their uvicorn.py ran, and run failed to start. The workers are spawned interpreters (``-c``),
    which put the working directory back first unless told not to."""
    port = free_port()
    args = [str(EXE), "run", "gateway.yaml", "--port", str(port), "--workers", "2"]  # not -m: Python's own import
    with ServerProcess(args, port=port, cwd=shared_dir) as server:
        server.wait_ready()
        _wait_for(lambda: server.output().count("Application startup complete.") == 2, server)
        assert server.stop() == 0, server.output()
        assert _ran(shared_dir) == [], server.output()
        assert WARNING in server.output()


@pytest.mark.skipif(os.geteuid() != 0, reason="the directory is given to another user (chown)")
def test_a_working_directory_of_another_users_is_not_on_the_import_path(shared_dir: Path) -> None:
    """Not writable by every user, but theirs: they can put a module there whenever they like."""
    shared_dir.chmod(0o755)
    os.chown(shared_dir, 65534, 65534)
    done = subprocess.run([str(EXE), "check", "gateway.yaml"], cwd=shared_dir, env=cli_env(), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert (_ran(shared_dir), done.returncode) == ([], 0), done.stderr
    assert f"{WARNING} (it belongs to " in done.stderr and "(uid 65534))" in done.stderr


def test_a_directory_of_this_users_still_imports_a_plugin_from_it(tmp_path: Path) -> None:
    """The working directory stays first on the import path when only this user can write it."""
    (tmp_path / "myplugin.py").write_text("open('imported', 'w').close()\n")
    (tmp_path / "gateway.yaml").write_text("plugins: [myplugin]\napis: []\n")
    done = subprocess.run([str(EXE), "check", "gateway.yaml"], cwd=tmp_path, env=cli_env(), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "imported").exists() and WARNING not in done.stderr


def test_a_working_directory_another_user_can_replace_is_not_on_the_import_path(shared_dir: Path) -> None:
    """This user's own directory (0755), in one every user may write without the sticky bit: another user
    renames it away and puts theirs at its path, which is what the import path (and run's workers, spawned
    later) read. Before: on the path, the pydantic.py found there at that path ran (exit 1)."""
    parent = Path(tempfile.mkdtemp(prefix="gw-open-", dir="/tmp"))
    try:
        parent.chmod(0o777)
        here = shutil.copytree(shared_dir, parent / "project")
        here.chmod(0o755)
        done = subprocess.run([str(EXE), "check", "gateway.yaml"], cwd=here, env=cli_env(), capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert (_ran(here), done.returncode) == ([], 0), done.stderr
        assert (f"warning: the working directory {here} is not on the import path: other users can replace it (its "
                f"directory {parent} is mode 0777, writable by all without the sticky bit)") in done.stderr  # fmt: skip
    finally:
        shutil.rmtree(parent, ignore_errors=True)
