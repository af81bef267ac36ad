"""Draw docs/_static/working_memory_glass_brain.png, the figure of the README and index.

Run from the repository root: ``python docs/make_readme_figure.py`` (offline, pretrained
model, a few seconds).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from nilearn import plotting  # noqa: E402

from nimare_mnm import MNMEncoder  # noqa: E402

OUT = Path(__file__).resolve().parent / "_static" / "working_memory_glass_brain.png"

result = MNMEncoder.load_pretrained(device="cpu").transform("working memory")
display = plotting.plot_glass_brain(
    result.get_map("z"),
    threshold=2.0,
    colorbar=True,
    plot_abs=False,
    cmap="hot",
    title='nimare-mnm: "working memory" (predicted z > 2)',
)
display.savefig(str(OUT), dpi=90)
display.close()
print(f"{OUT} ({OUT.stat().st_size / 1024:.0f} KB)")
