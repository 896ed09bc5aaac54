"""Refresh docs/report.png: build the morning report from a warehouse and photograph it in Chromium.

    make demo && python docs/report_screenshot.py [--warehouse .icp/warehouse.duckdb] [--out docs/report.png]

Uses the browser helper of the tests (headless Chromium over the DevTools pipe, network blocked).
The PNG is reduced to a 256-colour palette so it stays small enough to keep in the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from icp_pipeline.report.build import build_report  # noqa: E402
from icp_pipeline_tests.browser import visit_page  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warehouse", type=Path, default=ROOT / ".icp" / "warehouse.duckdb")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="icp_report_png_") as folder:
        report = build_report(args.warehouse, Path(folder) / "icp_report.html")
        shot = Path(folder) / "report.png"
        visit = visit_page(report.path, screenshot=shot)
        if visit.console_errors or visit.exceptions:
            raise SystemExit(f"the page logged errors: {visit.console_errors + visit.exceptions}")
        from PIL import Image

        with Image.open(shot) as image:
            image.convert("RGB").quantize(colors=256).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size / 1024:,.0f} KB, report as of {report.as_of}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
