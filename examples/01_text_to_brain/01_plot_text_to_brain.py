"""
From a text query to brain maps at the whole-brain and network levels
=====================================================================

Type a free-text query, get a predicted activation map as a NIfTI image, and look at it at
the whole-brain level and inside the Yeo-7 networks.

:class:`~nimare_mnm.MNMEncoder` embeds the query with a sentence encoder (all-MiniLM-L6-v2,
shipped on PyPI, so nothing is downloaded), places it in the shared hyperbolic space and
decodes a brain map from that point. :meth:`~nimare_mnm.MNMEncoder.transform` returns a
NiMARE :class:`~nimare.results.MetaResult`, the object NiMARE's own meta-analyses return,
with one map per level and two tables.

This example uses only the pretrained model shipped inside the package: it runs offline and
needs no corpus.
"""

###############################################################################
# Load the pretrained encoder
# ---------------------------
# :meth:`~nimare_mnm.MNMEncoder.load_pretrained` reads the default model from the package
# (about 20 MB). It was trained on the NeuroQuery studies outside the evaluation's test split.
import matplotlib.pyplot as plt
from nilearn import plotting

from nimare_mnm import MNMEncoder

encoder = MNMEncoder.load_pretrained(device="cpu")
print(f"{len(encoder.study_ids_)} training studies, preset {encoder.preset!r}")

###############################################################################
# Predict a map
# -------------
# ``transform`` takes one string (or a list of strings) and returns a MetaResult.
result = encoder.transform("working memory")
print(sorted(result.maps))
print(result.tables["query"])

###############################################################################
# The whole-brain map
# -------------------
# ``get_map("z")`` is a NIfTI image on the MNI152 2 mm grid, z-scored over the brain mask,
# that any nilearn or NiMARE function accepts.
z_img = result.get_map("z")
plotting.plot_glass_brain(
    z_img, threshold=2.0, colorbar=True, plot_abs=False, title="working memory (z > 2)"
)

###############################################################################
# The same prediction inside each Yeo-7 network
# ---------------------------------------------
# ``z_level-yeo7`` re-scores the prediction within each of the seven networks of Yeo et al.
# (2011): every network is z-scored on its own, so the pattern inside a weakly predicted
# network is as visible as the one inside a strongly predicted network. ``z_level-yeo17``
# does the same for the 17 networks and ``z_level-subcortical`` for the Harvard-Oxford
# subcortical structures (the Yeo atlases cover the cortex only).
plotting.plot_stat_map(
    result.get_map("z_level-yeo7"),
    threshold=1.5,
    display_mode="z",
    cut_coords=[-10, 10, 30, 50],
    title="working memory, within each Yeo-7 network",
)

###############################################################################
# Which networks and structures carry the prediction?
# ---------------------------------------------------
# The ``levels`` table has one row per region of every level: the mean and peak z of the
# whole-brain prediction inside the region, and the region's rank within its level.
levels = result.tables["levels"]
for level in ("yeo7", "yeo17", "subcortical"):
    best = levels[levels["level"] == level].sort_values("rank").head(3)
    print(f"{level:>12}: " + ", ".join(f"{r.region} ({r.mean_z:+.2f})" for r in best.itertuples()))

yeo7 = levels[levels["level"] == "yeo7"].sort_values("mean_z")
fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(yeo7["region"], yeo7["mean_z"], color="tab:red")
ax.axvline(0, color="k", lw=0.8)
ax.set_xlabel("mean z of the prediction inside the network")
ax.set_title("working memory: Yeo-7 networks")
fig.tight_layout()

###############################################################################
# Several queries at once
# -----------------------
# A list of queries gives a list of MetaResults. The ``query`` table also reports each
# query's *radius*, the hyperbolic distance of its point to the origin (lower means more
# general), and its *generality*, ``exp(-radius)`` (higher means more general; see
# :doc:`/concepts`).
queries = ["finger tapping", "fear conditioning", "reading words"]
fig, axes = plt.subplots(len(queries), 1, figsize=(7, 7.5))
for query, res, ax in zip(queries, encoder.transform(queries), axes):
    radius = res.tables["query"]["radius"].iloc[0]
    plotting.plot_glass_brain(
        res.get_map("z"),
        threshold=2.0,
        plot_abs=False,
        axes=ax,
        title=f"{query} (radius {radius:.3f})",
    )

###############################################################################
# Save the maps
# -------------
# A MetaResult saves every map as NIfTI, with NiMARE's file naming:
# ``result.save_maps(output_dir="maps", prefix="working_memory")``. From the command line,
# ``nimare-mnm encode "working memory" -o maps`` writes the same files plus a PNG and the
# levels table.
