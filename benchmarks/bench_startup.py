"""bench_startup: how long ``momo-geo --help`` and a bad-path error take, and their peak memory.

Each case runs ``--repeats`` times in a fresh interpreter (as the console script would); the
median wall time and the child's own peak RSS are reported, beside the bare interpreter
(``python -c pass``) and the import of the mapping engine (torch, timm), which is what a bad path
used to cost before arguments were checked first. Goal: ``--help`` and the bad-path error each
under 1 s. ``tests/test_startup.py`` checks the behaviour (one line, nothing heavy imported);
only this script measures time. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = "from momo_geo.cli import main; main()"
CASES = {
    "python": ["-c", "pass"],
    "help": ["-c", CLI, "--help"],
    "bad_path": ["-c", CLI, "map", "/no/such/file.tif"],
    "engine_import": ["-c", "import momo_geo.inference.engine"],
}
GOAL_S = 1.0


def run_once(args: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MB and exit status of one fresh interpreter.

    ``os.wait4`` gives this child's own peak RSS; the parent stays light until all runs are
    done (``common`` imports numpy and torch), so the forked child starts small."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    record: dict[str, object] = {"bench": "bench_startup", "repeats": args.repeats}
    for name, case in CASES.items():
        runs = [run_once(case) for _ in range(args.repeats)]
        record[f"{name}_s"] = round(statistics.median(r[0] for r in runs), 3)
        record[f"{name}_rss_mb"] = round(max(r[1] for r in runs), 1)
        record[f"{name}_exit"] = runs[-1][2]
    record["goal_s"] = GOAL_S
    record["goal_met"] = record["help_s"] < GOAL_S and record["bad_path_s"] < GOAL_S
    record["load_average"] = round(os.getloadavg()[0], 2)
    from common import emit, machine  # imports torch: only after the measurements

    record["machine"] = machine()
    emit(record)


if __name__ == "__main__":
    main()
