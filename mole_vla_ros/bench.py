"""`mole-vla bench`: run every benchmark script in benchmarks/ (each prints its own table)."""

from __future__ import annotations

import subprocess
import sys

from mole_vla_ros.info import package_root


def run(args) -> int:
    scripts = sorted((package_root() / "benchmarks").glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if any(o in s.name for o in args.only)]
    if not scripts:
        print("no benchmark scripts found in benchmarks/")
        return 1
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        if subprocess.call([sys.executable, str(script)]) != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the benchmark scripts in benchmarks/ (tables on stdout)")
    p.add_argument("--only", nargs="*", default=[], help="substrings of script names to run")
    p.set_defaults(func=run)
