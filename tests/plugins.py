"""Installed normalizer plugins for tests, found by importlib.metadata as any installed package is:
a distribution's .dist-info (METADATA, entry_points.txt) and its module in a folder put on
sys.path; or the example package in examples/ installed with pip into such a folder."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "telhawk-normalizer-example"
GROUP = "telhawk_ingest.normalizers"


def write_distribution(folder: Path, name: str, entry_points: dict[str, str], modules: dict[str, str],
                       version: str = "1.0") -> None:
    """A distribution `name` in `folder`: its modules and a dist-info declaring `entry_points`
    (entry point name -> "module:attribute") in the normalizers group."""
    folder.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(source)
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{ep} = {value}\n" for ep, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")


@contextmanager
def on_path(folder: Path) -> Iterator[None]:
    """`folder` first on sys.path while inside; the modules imported from it are forgotten after."""
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            if module is not None and str(getattr(module, "__file__", "") or "").startswith(str(folder)):
                del sys.modules[name]
        importlib.invalidate_caches()


def pip_install_example(target: Path, scratch: Path) -> None:
    """pip-install examples/telhawk-normalizer-example into `target`, offline and without its
    dependencies (telhawk-ingest is already here). Built from a copy, so the checkout stays clean."""
    source = scratch / "example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--disable-pip-version-check", "--target", str(target),
                    str(source)], check=True, timeout=300)
