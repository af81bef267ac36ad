"""nimare-mnm: multi-level neuroimaging meta-analysis with hyperbolic brain-text representations.

nimare-mnm brings MNM (Baek et al., MICCAI 2025) into NiMARE: texts from articles and the
brain maps they report are embedded in one Lorentz-model hyperbolic space, giving
text-to-brain prediction, map decoding and study retrieval at the whole-brain, Yeo-7,
Yeo-17 and subcortical levels.

``import nimare_mnm`` is cheap: the estimators (and with them torch and NiMARE) are imported
when first used, so that the command line answers ``--help`` and ``--version`` at once.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("nimare-mnm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    "MNMDecoder": "nimare_mnm.decoder",
    "MNMEncoder": "nimare_mnm.encoder",
    "load_neuroquery": "nimare_mnm.datasets",
    "load_neurosynth": "nimare_mnm.datasets",
}

__all__ = ["__version__", "MNMDecoder", "MNMEncoder", "load_neuroquery", "load_neurosynth"]

if TYPE_CHECKING:  # pragma: no cover
    from nimare_mnm.datasets import load_neuroquery, load_neurosynth
    from nimare_mnm.decoder import MNMDecoder
    from nimare_mnm.encoder import MNMEncoder


def __getattr__(name: str):
    """Import an estimator, a loader or a submodule on first access (PEP 562)."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:  # ``nimare_mnm.brain`` and the like, as before the imports became lazy
            return import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'nimare_mnm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
