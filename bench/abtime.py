"""Time two commands as whole processes, alternating A B A B, and report the ratio A/B.

These machines are noisy: absolute times drift, a ratio of runs taken side by side holds.
Usage as a library: `compare(a_argv, b_argv, runs=20)`; as a script:
    python bench/abtime.py --runs 20 -- 'llmctl --version' -- 'python3 -c pass'
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    a_median_s: float
    b_median_s: float
    ratio_median: float
    ratio_min: float
    ratio_max: float
    runs: int

    def report(self) -> str:
        return (
            f"A: {self.a}\n   median {self.a_median_s * 1000:.1f} ms\n"
            f"B: {self.b}\n   median {self.b_median_s * 1000:.1f} ms\n"
            f"A/B: median {self.ratio_median:.2f} (min {self.ratio_min:.2f}, max {self.ratio_max:.2f}),"
            f" {self.runs} pairs"
        )


def _once(argv: Sequence[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def compare(a: Sequence[str], b: Sequence[str], runs: int = 20, warmup: int = 2) -> Comparison:
    for _ in range(warmup):
        _once(a)
        _once(b)
    a_times, b_times = [], []
    for _ in range(runs):
        a_times.append(_once(a))
        b_times.append(_once(b))
    ratios = [x / y for x, y in zip(a_times, b_times, strict=True)]
    return Comparison(
        shlex.join(a), shlex.join(b), statistics.median(a_times), statistics.median(b_times),
        statistics.median(ratios), min(ratios), max(ratios), runs,
    )  # fmt: skip


def main(argv: list[str]) -> int:
    runs = 20
    if argv[:1] == ["--runs"]:
        runs, argv = int(argv[1]), argv[2:]
    if argv.count("--") != 2 or argv[0] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    second = argv.index("--", 1)
    a, b = " ".join(argv[1:second]), " ".join(argv[second + 1 :])
    print(compare(shlex.split(a), shlex.split(b), runs).report())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
