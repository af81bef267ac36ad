"""nimare-mnm: multi-level neuroimaging meta-analysis with hyperbolic brain-text representations.

nimare-mnm brings MNM (Baek et al., MICCAI 2025) into NiMARE: texts from articles and the
brain maps they report are embedded in one Lorentz-model hyperbolic space, giving
text-to-brain prediction, map decoding and study retrieval at the whole-brain, Yeo-7,
Yeo-17 and subcortical levels.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nimare-mnm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from nimare_mnm.datasets import load_neuroquery, load_neurosynth  # noqa: E402
from nimare_mnm.decoder import MNMDecoder  # noqa: E402
from nimare_mnm.encoder import MNMEncoder  # noqa: E402

__all__ = ["__version__", "MNMDecoder", "MNMEncoder", "load_neuroquery", "load_neurosynth"]
