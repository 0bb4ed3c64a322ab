"""Mutation testing of the core modules: `make mutate [MODULES="retry auth storage.local"]`.

Runs mutmut 3 over the function bodies of the modules listed in pyproject.toml's
`[tool.mutmut] only_mutate`, with the unit and functional suites, then prints each module's score:
killed / (total - equivalent), where the equivalent mutants are the ones listed, with a reason each,
in tests/mutation/EQUIVALENT.md. A mutant that makes the suite hang past mutmut's time limit counts
as killed (a user would notice the hang); every other survivor, "no tests" included, counts against
the score.

mutmut 3 names a mutant after its file's path and knows only the `src/` layout, while the tests
import `telhawk_ingest` from `lib/`. So the run happens in build/mutate, a fresh mirror of this
checkout: `src` is a link to `lib`, the other files the suites read (MIRRORED) are links, and
pyproject.toml is a copy whose `only_mutate` lists just the modules asked for. mutmut copies what it
needs into build/mutate/mutants and puts the mutated package first on the import path. At most 2
mutants are tested at once (MUTATE_JOBS to change it).

A whole run takes hours, so a run can be stopped and started again: the links and pyproject.toml
of the mirror are made anew each time, but mutmut's results (build/mutate/mutants) are kept. mutmut
checks again the mutants of every function whose code changed since; before it starts, every
verdict but "killed" (survivors, timeouts, mutants left unchecked) is cleared too, so that those
are checked against the tests as they are now. A killed mutant stays killed: tests are added far
more often than weakened, and `--fresh` starts from nothing.

With a mutant applied, a test that runs ten times longer than in mutmut's measuring run (at least
20 s; tests/conftest.py) fails, so a mutant that makes the code hang or crawl is reported as soon as
one test notices.

Usage: scripts/mutate.py [--fresh] [MODULE ...]   (MODULE as in `retry`, `storage.local`; default: all)
       scripts/mutate.py --scores                 (print the scores of the last run again)
Exit status: mutmut's, when it fails; otherwise 0 (a low score is reported, not enforced).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutate"
# What the unit and functional suites read besides the package (also_copy in pyproject.toml).
MIRRORED = ("src", "tests", "bench", "functions", "local", "template.yaml", "requirements.lock", "Makefile",
            ".ci", "docker-compose.yml", "deploy", "scripts", "examples")
EQUIVALENT = ROOT / "tests" / "mutation" / "EQUIVALENT.md"
PACKAGE = "telhawk_ingest"
# A listed equivalent mutant: "- `telhawk_ingest.retry.x_delay__mutmut_7`: reason".
EQUIVALENT_LINE = re.compile(r"^\s*[-*]\s+`(?P<name>[\w.ǁ]+__mutmut_\d+)`")


def core_modules() -> list[str]:
    """Dotted names below the package (`retry`, `storage.local`) from [tool.mutmut] only_mutate."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    prefix = f"src/{PACKAGE}/"
    return [p.removeprefix(prefix).removesuffix(".py").replace("/", ".") for p in config["only_mutate"]]


def build_mirror(modules: list[str], fresh: bool = False) -> None:
    """build/mutate, its pyproject.toml mutating only `modules` (the others are copied); `fresh`:
    without the results of earlier runs."""
    if fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    for name in MIRRORED:
        target = ROOT / ("lib" if name == "src" else name)
        link = WORK / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(target, WORK))
    paths = ", ".join(f'"src/{PACKAGE}/{m.replace(".", "/")}.py"' for m in modules)
    pyproject = re.sub(r"^only_mutate = \[.*?\]", f"only_mutate = [{paths}]",
                       (ROOT / "pyproject.toml").read_text(), count=1, flags=re.DOTALL | re.MULTILINE)
    (WORK / "pyproject.toml").write_text(pyproject)


def recheck_undetected(modules: list[str]) -> int:
    """Clear every verdict of the earlier runs but "killed" for `modules`, so that mutmut checks
    those mutants again; returns how many were cleared."""
    from mutmut.stats import status_by_exit_code

    cleared = 0
    for module in modules:
        meta = _meta(module)
        if not meta.exists():
            continue
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        again = [name for name, code in codes.items()
                 if code is not None and status_by_exit_code[code] != "killed"]
        if again:
            codes.update(dict.fromkeys(again, None))
            meta.write_text(json.dumps(data))
            cleared += len(again)
    return cleared


def run_mutmut() -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    jobs = os.environ.get("MUTATE_JOBS", "2")
    return subprocess.call([str(mutmut), "run", "--max-children", jobs], cwd=WORK)


def equivalent_mutants() -> set[str]:
    if not EQUIVALENT.exists():
        return set()
    return {m["name"] for line in EQUIVALENT.read_text().splitlines() if (m := EQUIVALENT_LINE.match(line))}


DETECTED = ("killed", "timeout")
# Each module should kill at least this share of its non-equivalent mutants.
TARGET = 0.9


@dataclass
class Score:
    module: str
    killed: int
    counted: int  # every mutant but the listed equivalent ones
    equivalent: int
    survivors: list[str]

    @property
    def percent(self) -> str:
        return f"{100 * self.killed / self.counted:.1f}%" if self.counted else "-"


def score(module: str, equivalent: set[str]) -> Score | None:
    """One module's score from the last run's result file, or None if the module was not run.
    A mutant left unchecked (an interrupted run) counts as a survivor."""
    from mutmut.stats import status_by_exit_code

    codes = _exit_codes(module)
    if codes is None:
        return None
    counted = {name: status_by_exit_code[code] for name, code in codes.items() if name not in equivalent}
    survivors = sorted((name for name, status in counted.items() if status not in DETECTED), key=_natural)
    return Score(module, len(counted) - len(survivors), len(counted), len(codes) - len(counted), survivors)


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number)


def print_scores(modules: list[str]) -> None:
    equivalent = equivalent_mutants()
    scores = [s for module in modules if (s := score(module, equivalent)) is not None]
    if not scores:
        print("mutate: no results; run `make mutate` first", file=sys.stderr)
        return
    sums = (sum(s.killed for s in scores), sum(s.counted for s in scores), sum(s.equivalent for s in scores))
    total = Score("all", *sums, survivors=[])
    print(f"\n{'module':<20} {'killed':>7} {'counted':>8} {'equiv.':>7} {'score':>7}")
    for s in [*scores, total]:
        below = "  below the 90% target" if s.counted and s.killed < TARGET * s.counted else ""
        print(f"{s.module:<20} {s.killed:>7} {s.counted:>8} {s.equivalent:>7} {s.percent:>7}{below}")
    for s in scores:
        if s.survivors:
            print(f"\nsurvivors in {s.module} (see one: cd build/mutate && ../../.venv/bin/mutmut show NAME)")
            print("\n".join(f"  {name}" for name in s.survivors))
    run = tuple(f"{PACKAGE}.{s.module}.x" for s in scores)
    produced = set().union(*(_exit_codes(s.module) or {} for s in scores))
    stale = sorted(name for name in equivalent - produced if name.startswith(run))
    if stale:
        print(f"\n{EQUIVALENT.relative_to(ROOT)} lists mutants this run did not produce (the code changed):")
        print("\n".join(f"  {name}" for name in stale))


def _meta(module: str) -> Path:
    """mutmut's results for one module's mutants."""
    return WORK / "mutants" / "src" / PACKAGE / (module.replace(".", "/") + ".py.meta")


def _exit_codes(module: str) -> dict[str, int | None] | None:
    """Mutant name -> mutmut's exit code (None: not checked) from the last run, None if not run."""
    meta = _meta(module)
    if not meta.exists():
        return None
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return codes if any(code is not None for code in codes.values()) else None


def main(argv: list[str]) -> int:
    known = core_modules()
    if argv == ["--scores"]:
        print_scores(known)
        return 0
    fresh = "--fresh" in argv
    argv = [arg for arg in argv if arg != "--fresh"]
    unknown = [m for m in argv if m not in known]
    if unknown:
        print(f"mutate: unknown module(s) {', '.join(unknown)}; known: {' '.join(known)}", file=sys.stderr)
        return 2
    modules = argv or known
    build_mirror(modules, fresh)
    cleared = recheck_undetected(modules)
    if cleared:
        print(f"mutate: {cleared} mutants not killed by an earlier run are checked again")
    status = run_mutmut()
    if status != 0:
        return status
    print_scores(modules)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
