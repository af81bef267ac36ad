"""
Retrieve studies for a query, then run ALE and MKDA on them
===========================================================

A label-based meta-analysis in NiMARE selects the studies whose abstract uses a term, then
runs a coordinate-based meta-analysis on them. nimare-mnm offers another way to select
studies: :meth:`~nimare_mnm.MNMEncoder.retrieve` ranks every training study by how close its
text and its brain map are to the query in the shared hyperbolic space and returns the top
``k`` as a NiMARE :class:`~nimare.nimads.Studyset`, which NiMARE's
:class:`~nimare.meta.cbma.ale.ALE` and :class:`~nimare.meta.cbma.mkda.MKDADensity` fit
directly.

This example runs both on "fear": ALE and MKDA on the 50 studies retrieved by the pretrained
model, beside NiMARE's MKDA on every NeuroQuery study whose abstract uses the term "fear".

The pretrained model holds the studies' points but not their coordinates, so this example
needs the NeuroQuery files: set ``NIMARE_MNM_DATA`` to the folder holding ``neuroquery/``
(``../shared/data`` from a clone of this project; see :doc:`/data`).
"""

###############################################################################
# Retrieve the 50 studies nearest to "fear"
# -----------------------------------------
import os
import time

import matplotlib.pyplot as plt
import numpy as np
from nilearn import plotting
from nimare.meta.cbma import ALE, MKDADensity

from nimare_mnm import MNMEncoder, load_neuroquery

data_dir = os.environ.get("NIMARE_MNM_DATA", "../shared/data")

encoder = MNMEncoder.load_pretrained(device="cpu")
retrieved = encoder.retrieve("fear", k=50, data_dir=data_dir)
print(retrieved)

###############################################################################
# The retrieved studies carry their rank and score as metadata (``mnm_rank``,
# ``mnm_score``) next to NeuroQuery's titles.
table = retrieved.metadata.drop_duplicates("study_id").sort_values("mnm_rank")
for row in table.head(10).itertuples():
    print(f"{int(row.mnm_rank):>3}  {row.mnm_score:7.3f}  {str(row.title)[:90]}")

###############################################################################
# ALE and MKDA on the retrieved studies
# -------------------------------------
# NeuroQuery does not record sample sizes, so ALE gets a fixed kernel width
# (``kernel__fwhm=10``, as in :meth:`~nimare_mnm.MNMEncoder.meta_analysis`).
t0 = time.perf_counter()
ale = ALE(kernel__fwhm=10).fit(retrieved)
mkda = MKDADensity().fit(retrieved)
print(f"ALE and MKDA on 50 studies: {time.perf_counter() - t0:.1f} s")

###############################################################################
# NiMARE's label-based MKDA for the same concept
# ----------------------------------------------
# :func:`~nimare_mnm.load_neuroquery` attaches NeuroQuery's abstract term counts as a NiMARE
# annotation (``neuroquery7547_abstract_count__<term>``). NiMARE's
# :meth:`~nimare.nimads.Studyset.filter_annotations` keeps the studies whose count reaches
# the threshold; 0.001, NiMARE's default label threshold, keeps every study that uses the
# term at least once. All of them go into the meta-analysis (a few hundred studies, so no
# cap is needed to stay within seconds).
studyset = load_neuroquery(data_dir)
label = "neuroquery7547_abstract_count__fear"
labelled = studyset.filter_annotations(label, threshold=0.001)
n_labelled = len(np.unique(labelled.study_ids))
print(f"{n_labelled} studies use 'fear' in their abstract")

t0 = time.perf_counter()
mkda_label = MKDADensity().fit(labelled)
print(f"MKDA on {n_labelled} studies: {time.perf_counter() - t0:.1f} s")

###############################################################################
# How much do the two selections overlap?
# ---------------------------------------
# Retrieval does not need the word itself: a study about threat, anxiety or the amygdala
# can be retrieved without "fear" in its abstract, and a study that mentions fear in passing
# can be left out.
retrieved_ids = set(np.asarray(retrieved.study_ids).astype(str))
labelled_ids = set(np.asarray(labelled.study_ids).astype(str))
both = retrieved_ids & labelled_ids
print(f"{len(both)} of the 50 retrieved studies use 'fear' in their abstract")

###############################################################################
# Compare the maps
# ----------------
fig, axes = plt.subplots(3, 1, figsize=(7, 7.5))
for ax, (name, res) in zip(
    axes,
    [
        ("ALE, 50 retrieved studies", ale),
        ("MKDA, 50 retrieved studies", mkda),
        (f"MKDA, {n_labelled} studies labelled 'fear'", mkda_label),
    ],
):
    plotting.plot_glass_brain(
        res.get_map("z"), threshold=3.1, plot_abs=False, axes=ax, title=f"{name} (z > 3.1)"
    )

z = {
    "ALE retrieved": ale.get_map("z", return_type="array"),
    "MKDA retrieved": mkda.get_map("z", return_type="array"),
    "MKDA label": mkda_label.get_map("z", return_type="array"),
}
r = np.corrcoef(np.stack(list(z.values())))
for i, a in enumerate(z):
    print(f"{a:>15}: " + "  ".join(f"r={r[i, j]:.2f} with {b}" for j, b in enumerate(z) if j != i))

###############################################################################
# The same from the command line
# ------------------------------
# ``nimare-mnm retrieve "fear" -k 50 --data-dir ../shared/data --meta-analysis ale -o out``
# lists the studies and writes the ALE z map; ``encoder.meta_analysis("fear", k=50,
# data_dir=...)`` does both steps in one call.
