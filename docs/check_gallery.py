"""Check that the built gallery ran every example and kept its figures.

Run by ``make html`` after sphinx-build: every example of ``examples/`` must have a rendered
page with at least one figure (``sphx_glr_<name>_001.png``) and a run time in
``sg_execution_times.rst``. Prints the examples' total run time.
"""

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
EXAMPLES = sorted((DOCS.parent / "examples").glob("[0-9][0-9]_*/[0-9][0-9]_plot_*.py"))


def main() -> int:
    """Return 0 when every example has its page and figure, else 1 (with the reasons)."""
    problems = []
    for path in EXAMPLES:
        folder = DOCS / "_build" / "html" / "auto_examples" / path.parent.name
        page = folder / f"{path.stem}.html"
        figure = (
            DOCS / "auto_examples" / path.parent.name / "images" / f"sphx_glr_{path.stem}_001.png"
        )
        if not page.is_file():
            problems.append(f"{path.name}: no rendered page {page}")
        elif not figure.is_file():
            problems.append(f"{path.name}: no figure (was the gallery built with plot_gallery=0?)")
        elif f"sphx_glr_{path.stem}_001.png" not in page.read_text(encoding="utf-8"):
            problems.append(f"{path.name}: the page does not show its figure")
    times = (DOCS / "sg_execution_times.rst").read_text(encoding="utf-8")
    seconds = [
        60 * int(m) + float(s) for m, s in re.findall(r"^\s+- (\d\d):(\d\d\.\d+)$", times, re.M)
    ]
    if len(seconds) < len(EXAMPLES):
        problems.append(f"sg_execution_times.rst lists {len(seconds)} of {len(EXAMPLES)} runs")
    for problem in problems:
        print(f"check_gallery: {problem}", file=sys.stderr)
    if not problems:
        print(
            f"check_gallery: {len(EXAMPLES)} examples rendered with figures, "
            f"{sum(seconds):.0f} s of example run time"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
