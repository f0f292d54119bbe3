"""Hatch build hook: compiles the optional C extensions (:data:`SOURCES`: the span encoder ``_span_wire.c`` and
the metric records ``_metric_add.c``, in ``src/asgi_ws_gateway/telemetry``), each on its own.

With the running Python's own compiler and flags (``sysconfig``: ``CC``, ``CFLAGS``, ``CCSHARED``,
``LDSHARED``), for wheels (then tagged for this interpreter and platform) and for editable installs
(``pip install -e .``: built in place, beside the sources, where the editable install imports them).
It never fails an install: without a compiler or Python's headers, or if the compiler fails, it
warns and goes on without that module (``otlp_wire`` then encodes every span in Python, the same
bytes; ``histograms`` and ``metric_totals`` record in Python, the same counts). ``ASGI_WS_GATEWAY_NO_NATIVE=1``
skips them. The built modules are git-ignored.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = (
    Path("src/asgi_ws_gateway/telemetry/_span_wire.c"),
    Path("src/asgi_ws_gateway/telemetry/_metric_add.c"),
)
WHAT = {"_span_wire": "span encoder; spans are encoded", "_metric_add": "metric records; metrics are recorded"}
PACKAGE_DIR = "asgi_ws_gateway/telemetry"
SKIP_VARIABLE = "ASGI_WS_GATEWAY_NO_NATIVE"
COMPILE_TIMEOUT = 300  # seconds, per compiler call


class NativeBuildError(Exception):
    """Why the extension was not built (a warning, never a failed install)."""


def _config(name: str) -> list[str]:
    value = sysconfig.get_config_var(name)
    return shlex.split(value) if isinstance(value, str) else []


def _run(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:  # no such compiler, or it hung
        raise NativeBuildError(f"{command[0]}: {error}") from None
    if done.returncode != 0:
        raise NativeBuildError(f"{shlex.join(command)} exited {done.returncode}:\n{done.stderr.strip()[-2000:]}")


def compile_extension(source: Path, target: Path) -> None:
    """Compile ``source`` into the extension module ``target``; :class:`NativeBuildError` when it cannot."""
    compiler, linker = _config("CC"), _config("LDSHARED")
    if not compiler or not linker:  # Windows' Python has none: MSVC is not driven here
        raise NativeBuildError("this Python names no C compiler (sysconfig CC/LDSHARED)")
    includes = {sysconfig.get_paths()["include"], sysconfig.get_paths()["platinclude"]}
    if not any((Path(include) / "Python.h").is_file() for include in includes):
        raise NativeBuildError(f"Python.h not found in {', '.join(sorted(includes))} (python3-dev not installed?)")
    with tempfile.TemporaryDirectory() as work:
        obj, built = Path(work) / f"{source.stem}.o", Path(work) / target.name
        flags = [*_config("CFLAGS"), *_config("CCSHARED"), *(f"-I{include}" for include in sorted(includes))]
        _run([*compiler, *flags, "-c", str(source), "-o", str(obj)])
        _run([*linker, str(obj), "-o", str(built)])
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copied next to the target, then renamed over it: a running process keeps the file it loaded.
        staged = target.with_name(target.name + ".tmp")
        shutil.copyfile(built, staged)
        os.replace(staged, target)


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]  # hatchling's generic, unparametrized
    """Builds the :data:`SOURCES` for the wheel target; warns and goes on without one when it cannot."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        root = Path(self.root)
        if version == "editable":  # a module built by an earlier install is not left behind, stale
            for source in SOURCES:
                (root / "src" / PACKAGE_DIR / f"{source.stem}{suffix}").unlink(missing_ok=True)
        if os.environ.get(SKIP_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on"):
            self.app.display_info(f"{SKIP_VARIABLE} set: the C extensions are not built (pure Python)")
            return
        for source in SOURCES:
            self._build(root, source, f"{source.stem}{suffix}", version, build_data)

    def _build(self, root: Path, source: Path, name: str, version: str, build_data: dict[str, Any]) -> None:
        try:
            if version == "editable":  # imported from the sources: built beside them
                compile_extension(root / source, root / "src" / PACKAGE_DIR / name)
            else:  # built outside the tree and added to the wheel, which is then this platform's
                if getattr(self, "_work", None) is None:
                    self._work = tempfile.mkdtemp(prefix="asgi-ws-gateway-native-")
                built = Path(self._work) / name
                compile_extension(root / source, built)
                build_data["force_include"][str(built)] = f"{PACKAGE_DIR}/{name}"
                build_data["pure_python"] = False
                build_data["infer_tag"] = True
        except Exception as error:  # whatever it is (a compiler, sysconfig, the disk): never a failed install
            what, done = WHAT.get(source.stem, "module; its work is done").split("; ")
            self.app.display_warning(
                f"asgi-ws-gateway: the optional C {what} was not built; {done} in pure Python "
                f"(the same results, slower). {error}"
            )

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
