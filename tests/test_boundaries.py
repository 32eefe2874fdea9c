"""Architecture rules that keep the engine reusable and the app safe for many users."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT

UI_MODULES = {"ui.py", "handlers.py", "session.py"}
ENGINE = sorted(p for p in (ROOT / "transfer_gui").glob("*.py") if p.name not in UI_MODULES)


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_engine_modules_never_import_gradio():
    assert len(ENGINE) >= 10
    for path in ENGINE:
        bad = [m for m in _imports(path) if m.split(".")[0] == "gradio"]
        assert not bad, f"{path.name} imports {bad}"
    code = ("import sys, transfer_gui.cli, transfer_gui.training, transfer_gui.bundle;"
            "print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_no_print_in_the_package():
    for path in sorted((ROOT / "transfer_gui").glob("*.py")):
        calls = [n for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
        assert not calls, f"{path.name} calls print()"


def test_no_module_level_mutable_state():
    """Module globals are shared by every user of the app. Containers at module level are only
    allowed as UPPER_CASE constant tables (never mutated) and ``__all__``."""
    mutable = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp, ast.Call)
    for path in sorted((ROOT / "transfer_gui").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, mutable):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for name in (t.id for t in targets if isinstance(t, ast.Name)):
                    constant = name in ("__all__", "_logger") or name.lstrip("_").isupper()
                    assert constant, f"{path.name}: module-level {name} may hold shared mutable state"


def test_the_page_is_built_without_importing_torch():
    """The app serves its page before torch and timm load (they take ~7 s on 2 cores, and
    app.py preloads them right after): building the whole page must not import them."""
    code = ("import sys; from transfer_gui.ui import build_demo; build_demo();"
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
