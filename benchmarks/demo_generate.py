"""Time `generate_demo` at a given size and report wall time and peak RSS.

Usage: python benchmarks/demo_generate.py --accounts 1000000 [--seed 7] [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from icp_pipeline.demo.generate import DemoSpec, generate_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[100_000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--quiet", action="store_true", help="no per-table progress lines")
    args = parser.parse_args(argv)

    for accounts in args.accounts:
        out = args.out / f"demo_{accounts}" if args.out else Path(tempfile.mkdtemp(prefix="icp_demo_"))
        started = time.perf_counter()

        def progress(message: str, started: float = started) -> None:
            if not args.quiet:
                print(f"  {time.perf_counter() - started:7.2f}s {message}", flush=True)

        truth = generate_demo(out, DemoSpec(accounts=accounts, seed=args.seed), progress=progress)
        seconds = time.perf_counter() - started
        # ru_maxrss is KiB on Linux (bytes on macOS); it is the process peak so far.
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mib = peak_kib / (1024 * 1024 if sys.platform == "darwin" else 1024)
        size_mib = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        rows = sum(truth["counts"].values())
        print(
            f"accounts={accounts:,} seconds={seconds:.2f} peak_rss_mib={peak_mib:,.0f} "
            f"rows_written={rows:,} output_mib={size_mib:,.0f} out={out}",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
