"""Mutation testing of core/ with mutmut, one module at a time, in bounded time.

    python scripts/mutation.py                      # every target below, 1 worker, 20 min cap each
    python scripts/mutation.py train losses --max-children 2 --minutes 10
    python scripts/mutation.py solvers --sample 60  # a seeded random sample of a big target
    python scripts/mutation.py train --focus lr_factor Plateau  # every mutant of those functions / classes
    python scripts/mutation.py --report             # re-read the last results, run nothing

Not part of the default test run (it takes tens of minutes). Each target is mutated in a
scratch copy of the working tree (out/mutation/<target>/, git-ignored) and run against ITS test
files only (TARGETS below), fastest tests first (so a killed mutant costs one quick test), with
mutmut's per-mutant CPU-time limit and a wall-clock cap per target (`--minutes`; mutants not
reached by then are reported as "not run"). mutmut keeps its results there, so a second run of
the same target only re-tests mutants whose code or tests changed.

The score is killed / (tried - equivalent): "killed" includes timeouts (a mutant that makes the
tests hang is caught), "equivalent" are the surviving mutants listed with a reason in
scripts/mutation_equivalent.txt (a mutant that cannot change behaviour, so no test can kill it).
Mutants that no selected test executes count as survivors.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "out" / "mutation"
EQUIVALENT = ROOT / "scripts" / "mutation_equivalent.txt"

# target -> (files to mutate, the tests that guard them; "!test id" deselects a test that needs more
# than core/, tests/ and assets/, e.g. the app)
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "train": (["core/train.py"], ["tests/test_train_contracts.py", "tests/test_train_recipe.py"]),
    "seeds": (["core/seeds.py"], ["tests/test_seeds.py"]),
    "losses": (["core/losses.py"], ["tests/test_losses.py", "tests/test_bespoke.py"]),
    "metrics": (["core/metrics.py"], ["tests/test_metrics.py"]),
    "checkpoint": (["core/checkpoint.py"], ["tests/test_checkpoint.py", "tests/test_model_io.py"]),
    "paths": (["core/paths.py"], ["tests/test_paths.py", "tests/test_dedicated.py", "tests/test_diffusers.py",
                                   "!tests/test_diffusers.py::test_app_model_page_opens_a_pipeline_folder"]),
    "solvers": (["core/solvers/*.py"], ["tests/test_classical.py", "tests/test_dedicated.py", "tests/test_linear.py",
                                        "tests/test_bespoke.py", "tests/test_bns.py"]),
}

# mutmut 3.8 exit codes (mutmut.stats.status_by_exit_code) -> our four classes
KILLED = {1, 3, 36, 24, -24, 152, 255, -9, -11}  # test failure, pytest error, timeout, killed
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}

ORDER_PLUGIN = '''\
"""pytest plugin written by scripts/mutation.py: run the fastest tests first (durations from
mutmut's stats), so a mutant that any quick test kills is not held up by a slow one."""
import json, os


def pytest_collection_modifyitems(items):
    try:
        with open(os.path.join(os.getcwd(), "mutmut-stats.json")) as f:
            dur = json.load(f)["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda it: dur.get(it.nodeid, 1e9))
'''


def load_equivalent() -> dict[str, str]:
    """mutant name -> reason, from lines 'name: reason' (# comments)."""
    out = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
            if line and ":" in line:
                name, reason = line.split(":", 1)
                out[name.strip()] = reason.strip()
    return out


def workdir(target: str, tests_from: str | None) -> Path:
    return WORK / (target if not tests_from else f"{target}@{tests_from.replace('/', '_')}")


def prepare(target: str, tests: list[str], files: list[str], tests_from: str | None = None) -> Path:
    """A scratch copy of the tracked (and new, not ignored) files with a mutmut config; with
    `tests_from`, tests/ comes from that git ref instead (to score an older test suite)."""
    work = workdir(target, tests_from)
    work.mkdir(parents=True, exist_ok=True)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\n")
    for rel in listed:
        if not rel or not (rel.startswith(("core/", "tests/", "assets/")) or rel in ("pytest.ini", "README.md")):
            continue
        if tests_from and rel.startswith("tests/"):
            continue
        src, dst = ROOT / rel, work / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                shutil.copy2(src, dst)
    if tests_from:
        shutil.rmtree(work / "tests", ignore_errors=True)
        archive = subprocess.run(["git", "archive", tests_from, "tests"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    (work / "plugins").mkdir(exist_ok=True)  # on PYTHONPATH; apart from the code, so `core` is the mutated one
    (work / "plugins" / "mutation_order.py").write_text(ORDER_PLUGIN)
    cfg = ["[mutmut]", "source_paths=core", "only_mutate="]
    cfg += [f"    {f}" for f in files]
    deselected = [t[1:] for t in tests if t.startswith("!")]
    selected = [t for t in tests if not t.startswith("!") and (work / t.split("::")[0]).exists()]
    if not selected:  # (an older ref may not have the target's tests) never fall back to the whole suite
        raise SystemExit(f"[{target}] none of {tests} exists{f' at {tests_from}' if tests_from else ''}")
    cfg += ["pytest_add_cli_args_test_selection="] + [f"    {t}" for t in selected]
    cfg += ["also_copy=", "    assets", "    README.md"]  # tests read the shipped files (and run the README's examples)
    cfg += ["pytest_add_cli_args=", "    -p", "    mutation_order", "    -p", "    no:cacheprovider",
            *(["    -k", "    " + " and ".join(f"not {t.split('::')[-1]}" for t in deselected)] if deselected else []),
            # torch is not fork-safe once it has run: fork the workers from a clean server process
            "process_isolation=forkserver", "forkserver_warmup=collect",
            "timeout_multiplier=4.0", "timeout_constant=5.0", ""]
    (work / "setup.cfg").write_text("\n".join(cfg))
    return work


def mutant_names(work: Path) -> dict[str, int | None]:
    """All mutants of a target with their last exit code (None: not run), from mutmut's .meta files."""
    out: dict[str, int | None] = {}
    for meta in sorted((work / "mutants").rglob("*.meta")):
        try:
            out.update(json.loads(meta.read_text())["exit_code_by_key"])
        except (OSError, ValueError, KeyError):
            continue
    return out


def generate_only(work: Path) -> None:
    """mutmut's mutant generation alone (no test run), to be able to draw a sample of names."""
    code = ("import os\n"
            "from mutmut.__main__ import create_mutants\n"
            "from mutmut.utils.file_utils import copy_src_dir, copy_also_copy_files, setup_source_paths\n"
            "os.makedirs('mutants', exist_ok=True); copy_src_dir(); copy_also_copy_files(); setup_source_paths()\n"
            "create_mutants(1)\n")
    subprocess.run([sys.executable, "-c", code], cwd=work, check=True, capture_output=True)


def function_labels(name: str) -> set[str]:
    """What a mutant name is in: mutmut names them module.x_function__mutmut_N or
    module.xǁClassǁmethod__mutmut_N; the labels are {function} or {Class, method, Class.method}."""
    fn = name.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
    if fn.startswith("x\u01c1"):
        cls, _, meth = fn[2:].partition("\u01c1")
        return {cls, meth, f"{cls}.{meth}"}
    return {fn[2:]} if fn.startswith("x_") else {fn}


def select(names: list[str], focus: list[str], sample: int, seed: int) -> list[str]:
    """Every mutant in a `focus` function or class, plus a seeded random sample of `sample` of
    the others (all of them when sample is 0 and there is no focus)."""
    chosen = [n for n in names if function_labels(n) & set(focus)]
    rest = [n for n in names if n not in set(chosen)]
    if sample or not focus:
        chosen += random.Random(seed).sample(rest, min(sample, len(rest)) if sample else len(rest))
    return sorted(chosen)


def run_target(target: str, args) -> float:
    files, tests = TARGETS[target]
    work = prepare(target, tests, files, args.tests_from)
    names: list[str] = []
    focus = args.focus or []
    if args.sample or focus:
        generate_only(work)
        allm = sorted(mutant_names(work))
        tag, sample_file = f"# sample={args.sample} seed={args.seed} focus={','.join(focus)}", work / "sample.txt"
        kept = sample_file.read_text().split("\n") if sample_file.exists() else []
        if kept and kept[0] == tag and all(n in allm for n in kept[1:] if n):
            names = [n for n in kept[1:] if n]  # the same sample as last time (the code did not move)
        else:
            names = select(allm, focus, args.sample, args.seed)
            sample_file.write_text("\n".join([tag, *names]) + "\n")
        done = mutant_names(work)  # mutmut re-runs every mutant it is named: name only the untested ones
        names = [n for n in names if (done.get(n) is None and not args.survivors_only)
                 or ((args.rerun_survivors or args.survivors_only) and done.get(n) in SURVIVED | NO_TESTS)]
        if not names:
            print(f"[{target}] every selected mutant already has a result")
            return 0.0
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=str(work / "plugins"))
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *names]
    print(f"[{target}] mutating {', '.join(files)} against {', '.join(tests)}; log: {work / 'run.log'}",
          flush=True)
    t0 = time.perf_counter()
    with open(work / "run.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=args.minutes * 60)
        except subprocess.TimeoutExpired:  # stop mutmut and its fork server and workers (its own session)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            print(f"[{target}] wall-clock cap of {args.minutes} min reached; unfinished mutants count as not run")
    return time.perf_counter() - t0


def report(targets: list[str], walls: dict[str, float], tests_from: str | None = None) -> int:
    eq = load_equivalent()
    rows, survivors = [], []
    totals = dict(mutants=0, tried=0, killed=0, timeout=0, survived=0, equivalent=0)
    for target in targets:
        work = workdir(target, tests_from)
        codes = mutant_names(work)
        sample_file = work / "sample.txt"
        if sample_file.exists():
            chosen = {n for n in sample_file.read_text().split("\n") if n and not n.startswith("#")}
            codes = {k: v for k, v in codes.items() if k in chosen}
        tried = {k: v for k, v in codes.items() if v is not None and v != 34}
        killed = [k for k, v in tried.items() if v in KILLED]
        timeout = [k for k, v in tried.items() if v in TIMEOUT]
        alive = sorted(k for k, v in tried.items() if v not in KILLED)
        equiv = [k for k in alive if k in eq]
        for k in alive:
            if k not in eq:
                survivors.append((k, tried[k]))
        denom = len(tried) - len(equiv)
        score = 100.0 * len(killed) / denom if denom else float("nan")
        rows.append((target, len(codes), len(tried), len(killed), len(timeout), len(alive) - len(equiv), len(equiv),
                     score, walls.get(target)))
        for key, val in zip(totals, (len(codes), len(tried), len(killed), len(timeout), len(alive) - len(equiv),
                                     len(equiv))):
            totals[key] += val
    print("\n| target | mutants | tried | killed | (of which timeout) | survived | equivalent | score | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for t, n, tr, k, to, s, e, sc, w in rows:
        print(f"| {t} | {n} | {tr} | {k} | {to} | {s} | {e} | {sc:.1f} % | {'' if w is None else f'{w / 60:.1f} min'} |")
    denom = totals["tried"] - totals["equivalent"]
    if len(rows) > 1 and denom:
        print(f"| all | {totals['mutants']} | {totals['tried']} | {totals['killed']} | {totals['timeout']} | "
              f"{totals['survived']} | {totals['equivalent']} | {100.0 * totals['killed'] / denom:.1f} % | |")
    if survivors:
        print("\nsurvivors not listed as equivalent (`python -m mutmut show NAME` in out/mutation/<target>):")
        for k, v in survivors:
            print(f"  {k}  (exit {v})")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", help=f"what to mutate (default: all of {', '.join(TARGETS)})")
    p.add_argument("--max-children", type=int, default=1, help="parallel mutant workers (default 1)")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock cap per target (default 20)")
    p.add_argument("--sample", type=int, default=0, help="test a seeded random sample of this many mutants")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--focus", nargs="+", metavar="NAME",
                   help="also test every mutant in these functions / classes / methods (e.g. lr_factor Plateau)")
    p.add_argument("--tests-from", metavar="GIT_REF", help="score the tests of that ref (e.g. main) on today's code")
    p.add_argument("--rerun-survivors", action="store_true", help="with --sample: test the survivors again (after new tests)")
    p.add_argument("--survivors-only", action="store_true",
                   help="with --sample / --focus: test only the last run's survivors again (not the untried)")
    p.add_argument("--report", action="store_true", help="only print the table of the last results")
    args = p.parse_args(argv)
    targets = args.targets or list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}")
    walls: dict[str, float] = {}
    if not args.report:
        for t in targets:
            walls[t] = run_target(t, args)
    return report(targets, walls, args.tests_from)


if __name__ == "__main__":
    sys.exit(main())
