"""Architecture rules that keep the engine reusable and the app safe for many users."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "transfer_gui"
MODULES = sorted(PACKAGE.rglob("*.py"))
APP = sorted((PACKAGE / "app").rglob("*.py"))
# The engine and the two modules beside it, which the command line uses without the page.
NOT_APP = sorted(set(MODULES) - set(APP))
MAX_LINES = 400  # a module longer than this holds more than one job: split it
# A function longer than this does not fit on a screen. Chosen from the code: after the split into
# tabs and the training policies, the longest functions (a fine-tuning run, building the command
# line's parser, creating a model from any of its sources) are 70-80 lines of one sequence each.
MAX_FUNCTION_LINES = 80


def _imports(path):
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            yield ".".join([*base, node.module] if node.module else base) if node.level else node.module
            if node.module is None:  # from . import a, b
                yield from (".".join([*base, a.name]) for a in node.names)


@pytest.mark.slow
def test_only_the_app_imports_gradio_and_nothing_imports_the_app():
    assert len(NOT_APP) >= 20 and len(APP) >= 5
    for path in NOT_APP:
        bad = [m for m in _imports(path) if m.split(".")[0] == "gradio" or m.startswith("transfer_gui.app")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    code = ("import sys, transfer_gui.cli, transfer_gui.engine.training, transfer_gui.engine.bundle;"
            "print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_the_engine_imports_no_settings():
    """Settings are read once by each entry point (the app, the command line) and passed down."""
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        bad = [m for m in _imports(path) if m == "transfer_gui.settings"]
        assert not bad, f"{path.relative_to(ROOT)} imports the settings"


def test_the_relative_imports_are_resolved_as_python_does():
    # the rule above is only as good as _imports: check it on a module with both kinds of import
    # (a tab's module: one and three dots, ..model_step and ...engine.catalog)
    names = set(_imports(PACKAGE / "app" / "tabs" / "model.py"))
    assert {"gradio", "transfer_gui.engine.catalog", "transfer_gui.app.model_step"} <= names, names


def test_no_module_is_longer_than_a_screenful_of_jobs():
    long = {str(p.relative_to(ROOT)): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (one job each): {long}"


def test_no_function_is_longer_than_a_screen():
    long = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert not long, f"split these functions (they do not fit on a screen): {long}"


def test_no_print_in_the_package():
    for path in MODULES:
        calls = [n for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
        assert not calls, f"{path.name} calls print()"


def test_no_module_level_mutable_state():
    """Module globals are shared by every user of the app. Containers at module level are only
    allowed as UPPER_CASE constant tables (never mutated) and ``__all__``."""
    mutable = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp, ast.Call)
    for path in MODULES:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, mutable):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for name in (t.id for t in targets if isinstance(t, ast.Name)):
                    constant = name in ("__all__", "_logger") or name.lstrip("_").isupper()
                    assert constant, f"{path.name}: module-level {name} may hold shared mutable state"


@pytest.mark.slow
def test_the_page_is_built_without_importing_torch():
    """The app serves its page before torch and timm load (they take ~7 s on 2 cores, and
    app.py preloads them right after): building the whole page must not import them."""
    code = ("import sys; from transfer_gui.app.layout import build_demo; build_demo();"
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_event_outputs_are_wired_by_field_name_and_a_missing_component_is_refused():
    """Events return NamedTuples; the layout lists their components by field name, so adding a
    field without its component (or the other way round) fails when the page is built."""
    from transfer_gui.app.test_step import Verdict
    from transfer_gui.app.views import outputs

    assert outputs(Verdict, heat="h", verdict="v", heat_note="n", confidences="c", file_under="f") == [
        "v", "c", "h", "n", "f"]
    with pytest.raises(TypeError, match=r"no component for \['heat_note'\]; no field for \['caption'\]"):
        outputs(Verdict, heat="h", verdict="v", confidences="c", caption="x", file_under="f")


def _requirements(lines) -> set[str]:
    """Requirement specifiers without comments, options or spaces."""
    found = set()
    for line in lines:
        line = line.split("#", 1)[0].replace(" ", "")
        if line and not line.startswith("-"):
            found.add(line)
    return found


def test_the_spaces_requirements_are_the_packages_dependencies_with_the_app_and_export_extras():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = _requirements([*project["dependencies"], *extras["app"], *extras["export"]])
    assert _requirements((ROOT / "requirements.txt").read_text().splitlines()) == wanted
    assert "transfer-gui[app,export]" in extras["dev"]


def test_the_package_is_installed_with_its_command():
    """The README's commands install the package (editable): its command runs from anywhere."""
    import shutil

    from transfer_gui import __version__

    command = shutil.which("transfer-gui", path=str(Path(sys.executable).parent))
    assert command is not None, "pip install -e '.[dev]' (the README's test command) adds transfer-gui"
    proc = subprocess.run([command, "--version"], capture_output=True, text=True, cwd="/", timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == __version__, proc.stderr
