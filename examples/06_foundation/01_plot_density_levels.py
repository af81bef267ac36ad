"""
Peak densities at the whole-brain, Yeo-7 and subcortical levels
================================================================

Load NeuroQuery as a NiMARE Studyset, turn one study's peaks into a density map, split it
into network-level maps and round-trip it through the compact brain vector.

Needs the NeuroQuery files and atlases: set ``NIMARE_MNM_DATA`` to the folder holding
``neuroquery/`` and ``atlases/`` (``../shared/data`` from a clone of this project; see
:doc:`/data`).
"""

###############################################################################
# Load the corpus
# ---------------
import os

import numpy as np
from nilearn import plotting

from nimare_mnm import load_neuroquery
from nimare_mnm.atlases import BrainLevels
from nimare_mnm.datasets import study_texts
from nimare_mnm.densities import PeakDensity
from nimare_mnm.vectorizer import BrainVectorizer

data_dir = os.environ.get("NIMARE_MNM_DATA", "../shared/data")
studyset = load_neuroquery(data_dir)
texts = study_texts(studyset)
print(studyset)
print(texts.iloc[0][:300])

###############################################################################
# One study's density map
# -----------------------
study = studyset.filter_study_ids([texts.index[0]])
density = PeakDensity(fwhm=9.0)
ids, maps = density.transform(study)
img = density.to_img(maps.toarray()[0])
plotting.plot_glass_brain(img, title="peak density")

###############################################################################
# Levels and the compact vector
# -----------------------------
levels = BrainLevels(data_dir).fit()
vectorizer = BrainVectorizer(data_dir=data_dir).fit(levels)
vector = vectorizer.transform(maps.toarray())
network_mass = levels.region_masks("yeo7") @ maps.toarray()[0]
for name, mass in zip(levels.names_["yeo7"], network_mass):
    print(f"{name:>18}: {mass:.2f} peaks")
rebuilt = vectorizer.to_img(vector)
r = np.corrcoef(maps.toarray()[0], vectorizer.inverse_transform(vector)[0])[0, 1]
plotting.plot_glass_brain(
    rebuilt, title=f"from the {vectorizer.n_components_}-d vector (r={r:.2f})"
)
