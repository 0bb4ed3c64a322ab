"""scripts/mutate.py (`make mutate`): a stopped run goes on where it was, with what it had not
killed checked again; `--fresh` starts from nothing. On a temporary mirror, without running mutmut."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mutate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate_script", ROOT / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "WORK", tmp_path / "build" / "mutate")
    return module


def earlier_results(mutate: ModuleType, codes: dict[str, int | None]) -> Path:
    meta = mutate.WORK / "mutants" / "src" / "telhawk_ingest" / "retry.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": {"x_delay": "abc"}}))
    return meta


def test_a_new_run_keeps_what_was_killed_and_checks_the_rest_again(mutate, capsys):
    name = "telhawk_ingest.retry.x_delay__mutmut_{}".format
    meta = earlier_results(mutate, {name(1): 1, name(2): 0, name(3): 36, name(4): None, name(5): 33})
    mutate.build_mirror(["retry"])

    assert mutate.recheck_undetected(["retry", "auth"]) == 3

    data = json.loads(meta.read_text())
    assert data["exit_code_by_key"] == {name(1): 1, **{name(n): None for n in (2, 3, 4, 5)}}
    assert data["hash_by_function_name"] == {"x_delay": "abc"}  # unchanged functions stay known
    assert (mutate.WORK / "src").resolve() == ROOT / "lib"
    assert 'only_mutate = ["src/telhawk_ingest/retry.py"]' in (mutate.WORK / "pyproject.toml").read_text()


def test_fresh_drops_the_earlier_results_and_a_second_mirror_relinks(mutate):
    meta = earlier_results(mutate, {"telhawk_ingest.retry.x_delay__mutmut_1": 1})
    mutate.build_mirror(["retry"])
    mutate.build_mirror(["retry", "auth"])  # the links are made again, not refused as existing
    assert meta.exists()

    mutate.build_mirror(["retry"], fresh=True)

    assert not meta.exists()
    assert (mutate.WORK / "tests").resolve() == ROOT / "tests"
