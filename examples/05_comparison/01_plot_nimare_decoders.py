"""
MNMDecoder beside NiMARE's CorrelationDecoder
=============================================

NiMARE's :class:`~nimare.decode.continuous.CorrelationDecoder` decodes a map by running one
meta-analysis per term (MKDA chi-square on the studies that use the term against the others)
and correlating the map with each term's meta-analytic map. :class:`~nimare_mnm.MNMDecoder`
embeds the map and the terms in the shared hyperbolic space and compares them there.

Both decode nilearn's sample motor activation map over the same small vocabulary of twelve
terms. To stay within a minute, the CorrelationDecoder is fitted on a random 1,500-study
subset of NeuroQuery (its full-corpus fit takes minutes per term); the MNMDecoder is the
pretrained one, restricted to the same terms. The two rankings and their run times are
printed and plotted side by side.

This example needs the NeuroQuery files: set ``NIMARE_MNM_DATA`` to the folder holding
``neuroquery/`` (``../shared/data`` from a clone of this project; see :doc:`/data`).
"""

###############################################################################
# The map and the vocabulary
# --------------------------
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from nilearn.datasets import load_sample_motor_activation_image
from nimare.decode.continuous import CorrelationDecoder
from scipy.stats import spearmanr

from nimare_mnm import MNMDecoder, load_neuroquery

data_dir = os.environ.get("NIMARE_MNM_DATA", "../shared/data")
img = load_sample_motor_activation_image()
terms = ["motor", "movement", "finger", "visual", "auditory", "language", "memory",
         "working memory", "fear", "reward", "pain", "face"]  # fmt: skip
group = "neuroquery7547_abstract_count"

###############################################################################
# NiMARE's CorrelationDecoder on a NeuroQuery subset
# --------------------------------------------------
studyset = load_neuroquery(data_dir)
ids = np.unique(np.asarray(studyset.study_ids).astype(str))
subset = np.random.default_rng(0).permutation(ids)[:1500]
small = studyset.filter_study_ids(list(subset))

t0 = time.perf_counter()
correlation = CorrelationDecoder(feature_group=group, features=terms, frequency_threshold=0.001)
with np.errstate(divide="ignore", invalid="ignore"):  # terms absent from some voxels
    correlation.fit(small)
fit_nimare = time.perf_counter() - t0
t0 = time.perf_counter()
nimare_table = correlation.transform(img)
decode_nimare = time.perf_counter() - t0
nimare_table.index = [name.split("__", 1)[1] for name in nimare_table.index]
print(f"CorrelationDecoder: fit {fit_nimare:.1f} s on {len(subset)} studies, "
      f"decode {decode_nimare:.2f} s")  # fmt: skip

###############################################################################
# MNMDecoder over the same terms
# ------------------------------
# Without a studyset, :meth:`~nimare_mnm.MNMDecoder.fit` takes the pretrained model's
# vocabulary, here restricted to ``features``; it only embeds the twelve terms.
t0 = time.perf_counter()
mnm = MNMDecoder(features=terms).fit()
fit_mnm = time.perf_counter() - t0
t0 = time.perf_counter()
mnm_table = mnm.transform(img)
decode_mnm = time.perf_counter() - t0
print(f"MNMDecoder: fit {fit_mnm:.1f} s (pretrained), decode {decode_mnm:.2f} s")

###############################################################################
# The two rankings
# ----------------
both = pd.DataFrame(
    {
        "MNM score": mnm_table["score"],
        "MNM rank": mnm_table["score"].rank(ascending=False).astype(int),
        "NiMARE r": nimare_table["r"],
        "NiMARE rank": nimare_table["r"].rank(ascending=False).astype(int),
        "MNM region": mnm_table["level"] + ":" + mnm_table["region"],
    }
).sort_values("MNM rank")
print(both.to_string(float_format="{:.3f}".format))
rho, _ = spearmanr(both["MNM score"], both["NiMARE r"])
print(f"Spearman correlation between the two rankings: {rho:.2f}")

###############################################################################
# Side by side
# ------------
fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
order = both.index[::-1]
axes[0].barh(order, both.loc[order, "MNM score"] - both["MNM score"].min(), color="tab:red")
axes[0].set_xlabel("MNM score minus the lowest")
axes[0].set_title(f"MNMDecoder ({decode_mnm:.1f} s)")
axes[1].barh(order, both.loc[order, "NiMARE r"], color="tab:gray")
axes[1].axvline(0, color="k", lw=0.8)
axes[1].set_xlabel("Pearson r with the term's MKDA map")
axes[1].set_title(f"CorrelationDecoder (fit {fit_nimare:.0f} s)")
fig.suptitle(f"Decoding nilearn's motor map (rank correlation {rho:.2f})")
fig.tight_layout()

###############################################################################
# What differs
# ------------
# The CorrelationDecoder needs one meta-analysis per term over a corpus with coordinates,
# which is why it was fitted on a subset here; a term used by few studies of the subset gets
# a noisy map. The MNMDecoder needs no coordinates at decoding time and can score any
# phrase, including ones no study uses verbatim (``MNMDecoder(features=[...])`` with
# free-text terms and a studyset without annotations), but its scores are similarities in a
# learned space, not correlations with observed maps. NiMARE's
# :class:`~nimare.decode.continuous.ROIAssociationDecoder` and the discrete decoders can be
# compared the same way.
