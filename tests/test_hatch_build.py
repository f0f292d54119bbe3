"""The build hook (``hatch_build.py``) compiles each optional C extension on its own and never fails an install."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import sysconfig
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


class _Hook:
    """hatchling's ``BuildHookInterface``, as far as the hook uses it (hatchling is a build dependency only)."""


def _hatch_build(monkeypatch: pytest.MonkeyPatch) -> Any:
    if importlib.util.find_spec("hatchling") is None:
        interface = types.ModuleType("hatchling.builders.hooks.plugin.interface")
        interface.BuildHookInterface = _Hook  # type: ignore[attr-defined]
        for name in ("hatchling", "hatchling.builders", "hatchling.builders.hooks", "hatchling.builders.hooks.plugin"):
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        monkeypatch.setitem(sys.modules, interface.__name__, interface)
    spec = importlib.util.spec_from_file_location("hatch_build_under_test", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _App:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def display_warning(self, message: str) -> None:
        self.warnings.append(message)

    def display_info(self, message: str) -> None:
        pass


@pytest.mark.skipif(not sysconfig.get_config_var("CC"), reason="this Python names no C compiler")
def test_each_extension_is_built_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One source that does not compile is warned about; the other is still built into the wheel."""
    hatch_build = _hatch_build(monkeypatch)
    monkeypatch.delenv(hatch_build.SKIP_VARIABLE, raising=False)
    assert [source.name for source in hatch_build.SOURCES] == ["_span_wire.c", "_metric_add.c"]
    for source in hatch_build.SOURCES:
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / source, tmp_path / source)
    with (tmp_path / hatch_build.SOURCES[0]).open("a") as broken:
        broken.write("\nnot C\n")
    hook = hatch_build.CustomBuildHook()
    hook.target_name, hook.root, hook.app = "wheel", str(tmp_path), _App()
    build_data: dict[str, Any] = {"force_include": {}}
    hook.initialize("standard", build_data)
    try:
        assert [Path(target).name.split(".")[0] for target in build_data["force_include"].values()] == ["_metric_add"]
        assert build_data["pure_python"] is False
        assert len(hook.app.warnings) == 1
        assert "the optional C span encoder was not built" in hook.app.warnings[0]
    finally:
        hook.finalize("standard", build_data, "")
