"""The installed package ships the product only: no backdoor trainers, no baselines, no benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCE = (".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".grimp_cache",
               ".import_linter_cache", ".zoo", ".zoo-long", ".cache", ".venv")


def _wheel_names(tmp_path: Path) -> list[str]:
    """Build a wheel of a copy of the repository (offline, no build isolation) and list its files.

    A copy, so the build's ``build/`` and ``*.egg-info`` land in ``tmp_path``, not in the work tree.
    """
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    dist = tmp_path / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(dist)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = dist.glob("hfaudit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_the_wheel_holds_the_product_and_nothing_of_the_benchmarks(tmp_path: Path) -> None:
    names = _wheel_names(tmp_path)
    assert "hfaudit/__init__.py" in names and "hfaudit/cli.py" in names
    assert "hfaudit/assets/digits_classifier.safetensors" in names  # package data: fidelity's classifier
    assert not [n for n in names if n.startswith("hfaudit/attacks/")], "the backdoor trainers are benchmark code"
    assert not [n for n in names if n.endswith("baselines.py")], "the anchors' baselines are benchmark code"
    assert not [n for n in names if n.startswith(("benchmarks/", "tests/", "examples/"))]
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"hfaudit"}
    typed = (ROOT / "hfaudit" / "py.typed").is_file()
    assert ("hfaudit/py.typed" in names) == typed, (
        "hfaudit/py.typed exists but is not in the wheel: add it to [tool.setuptools.package-data]" if typed
        else "the wheel has a py.typed that the source does not")
