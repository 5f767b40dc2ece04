"""The import-linter contracts of pyproject.toml hold, and break when a layer is crossed.

The check runs on a copy of the two packages, so that a module of ``model/`` can be made to
import ``node/`` (or a low layer a high one) without touching the tree under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    linter = shutil.which("lint-imports") or f"{sys.executable} -m importlinter.cli"
    return subprocess.run([*linter.split(), "--no-cache", "--config", str(tree / "pyproject.toml")],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layers")
    for package in ("model", "node"):
        shutil.copytree(ROOT / package, out / package,
                        ignore=shutil.ignore_patterns("__pycache__", "weights"))
    shutil.copy(ROOT / "pyproject.toml", out / "pyproject.toml")
    return out


def _with_import(tree: Path, module: str, statement: str) -> Path:
    path = tree / (module.replace(".", "/") + ".py")
    original = path.read_text()
    path.write_text(original + f"\n{statement}  # added by the test\n")
    return path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    proc = lint_imports(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BROKEN" not in proc.stdout


@pytest.mark.parametrize(("module", "statement", "contract"), [
    ("model.conventions", "import node.settings", "model never imports node"),
    ("model.geometry", "import pydicom", "read no DICOM"),
    ("model.decision", "from model.dicom import sro", "model layers"),
    ("node.audit.store", "from node.ingest import archive", "node layers"),
    ("model.training.baseline", "from model.training import trainer", "training"),
    ("node.ingest.receipt", "from node.ingest import reconcile", "ingest"),
    ("node.cli.audit", "from node.cli import serve", "cli"),
])
def test_crossing_a_layer_breaks_a_contract(tree: Path, module: str, statement: str,
                                            contract: str) -> None:
    path = _with_import(tree, module, statement)
    original = path.read_text().replace(f"\n{statement}  # added by the test\n", "")
    try:
        proc = lint_imports(tree)
    finally:
        path.write_text(original)
    assert proc.returncode != 0
    broken = [line for line in proc.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), proc.stdout
