"""``python -m bench [NAME ...] [--quick]``: run benchmarks, then write bench/RESULTS.md.

Each benchmark writes its own section to ``bench/results/<area>.md`` (with the machine, the
command and medians); RESULTS.md gathers them, so a partial run keeps the other areas' figures.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "sync": "bench.sync_bench",
    "risk-speed": "bench.risk_scan",
    "risk-validity": "bench.risk_validity",
    "matching-quality": "bench.matching_quality",
    "matching-speed": "bench.matching_speed",
    "matching-febrl": "bench.matching_febrl",
    "cases": "bench.cases_list",
}


def assemble() -> Path:
    """Write RESULTS.md from the per-area result files."""
    parts = [
        "# Fairwatch benchmark results\n",
        "Measured on the project's 2-core development machine; every section names the command "
        "that produced it. Regenerate with `make bench` (all) or `python -m bench NAME` (one).\n",
        f"Assembled on {platform.node() or 'this machine'} ({platform.machine()}, "
        f"Python {platform.python_version()}).\n",
    ]
    for path in sorted((HERE / "results").glob("*.md")):
        parts.append(path.read_text(encoding="utf-8").strip() + "\n")
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    failed = []
    for name in args.names or list(BENCHMARKS):
        module = BENCHMARKS[name]
        if not (HERE / f"{module.split('.')[-1]}.py").exists():
            print(f"-- {name}: not written yet, skipped")
            continue
        print(f"-- {name}: python -m {module}{' --quick' if args.quick else ''}", flush=True)
        command = [sys.executable, "-m", module, *(["--quick"] if args.quick else [])]
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
    print(f"written {assemble()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
