"""Reproducible installs: requirements.lock pins every dependency with hashes, agrees with
pyproject.toml, and is what `make`, CI and the container install (README "Reproducible installs")."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PINNED = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)\s*(?:;\s*(.*?))?\s+(--hash=sha256:[0-9a-f]{64}\s*)+$")


def locked() -> dict[str, list[tuple[Version, str]]]:
    """name -> [(version, environment marker)], from the lock's logical lines."""
    text = LOCK.read_text().replace("\\\n", " ")
    out: dict[str, list[tuple[Version, str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PINNED.match(line)
        assert match, f"not pinned with hashes: {line[:80]}"
        out.setdefault(canonicalize_name(match[1]), []).append((Version(match[2]), match[3] or ""))
    return out


def test_every_dependency_of_pyproject_is_locked_at_a_version_it_allows():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["test"],
              *project["build-system"]["requires"]]
    pins = locked()
    for text in wanted:
        requirement = Requirement(text)
        versions = pins.get(canonicalize_name(requirement.name))
        assert versions, f"{requirement.name} is not in requirements.lock: run `make lock`"
        assert all(requirement.specifier.contains(v, prereleases=True) for v, _ in versions), text


def test_gunicorn_is_locked_at_a_version_with_the_request_smuggling_fixes():
    [(version, _)] = locked()["gunicorn"]
    assert version >= Version("23.0.0")  # CVE-2024-1135 (fixed in 22.0.0), CVE-2024-6827 (23.0.0)


def test_make_ci_and_the_container_install_from_the_lock_with_hashes():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r $(LOCK)" in makefile
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in makefile
    assert "$(STAMP): pyproject.toml $(LOCK)" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "--require-hashes -r requirements.lock" in (ROOT / "docker-compose.yml").read_text()
