r"""
Terms and studies in the Poincaré disk, and what generality measures
=====================================================================

nimare-mnm places texts and brain maps in one Lorentz-model hyperbolic space. A point's
distance to the origin, its *radius*, is meant to order concepts from general (near the
origin) to specific (far from it); its *generality* is ``exp(-radius)``, higher for more
general concepts, and the training objective asks a text to *entail* the
brain map it describes: the map's point should lie in a cone that opens away from the origin
at the text's point.

This example draws the pretrained model's term and study points in the Poincaré disk, then
checks what the radius of a term has to do with how often the term is used.

Everything comes from the pretrained model: this example runs offline.

How the points are drawn
------------------------
A point :math:`x \in \mathbb{R}^d` (space coordinates; the time coordinate is
:math:`\sqrt{1/c + \|x\|^2}` for curvature :math:`-c`) maps to the Poincaré ball by
:math:`x / (1 + \sqrt{c}\,x_t)`; its distance to the centre of the unit ball is
:math:`\tanh(\sqrt{c}\,r/2)`, where :math:`r` is the hyperbolic distance of the point to the
origin. The space has 128 dimensions, so a flat picture needs a projection: each point's
tangent vector at the origin (:func:`nimare_mnm.lorentz.logmap0`, whose norm is :math:`r`) is
projected on the two principal axes of all the tangent vectors, giving a direction in the
plane, and the point is drawn in that direction at its exact Poincaré radius
:math:`\tanh(\sqrt{c}\,r/2)`. Radii, hence generality, are exact; angles between points are
only those of the principal plane.
"""

###############################################################################
# Load the pretrained model and its points
# ----------------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr

from nimare_mnm import MNMDecoder, lorentz

decoder = MNMDecoder.load_pretrained(device="cpu")
encoder = decoder.encoder_
with torch.no_grad():
    c = float(encoder.model_.curvature)
print(f"curvature -c with c = {c:.3f}")

terms = np.asarray(decoder.features_)
term_points = decoder.term_points_
study_text = encoder.study_text_points_
study_brain = encoder.study_brain_points_

###############################################################################
# Project to the Poincaré disk
# ----------------------------
# The principal axes come from the tangent vectors of all three sets together, so that
# terms, study texts and study maps share one picture.


def tangent(points):
    with torch.no_grad():
        return lorentz.logmap0(torch.as_tensor(points, dtype=torch.float32), c).numpy()


def radius(points):
    with torch.no_grad():
        return lorentz.dist0(torch.as_tensor(points, dtype=torch.float32), c).numpy()


vectors = {
    "terms": tangent(term_points),
    "text": tangent(study_text),
    "brain": tangent(study_brain),
}
# Principal axes of the unit directions (so that the far-away brain points do not dominate).
directions = np.concatenate(
    [v / np.linalg.norm(v, axis=1, keepdims=True) for v in vectors.values()]
)
_, _, axes_2d = np.linalg.svd(directions - directions.mean(0), full_matrices=False)
axes_2d = axes_2d[:2].T


def to_disk(points, plane=axes_2d):
    """Return the 2-D positions in the unit Poincaré disk (exact radius, projected angle)."""
    flat = tangent(points) @ plane
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    return flat * np.tanh(np.sqrt(c) * radius(points) / 2)[:, None]


disk = {"terms": to_disk(term_points), "text": to_disk(study_text), "brain": to_disk(study_brain)}
for name, points in [
    ("terms", term_points),
    ("study texts", study_text),
    ("study maps", study_brain),
]:
    r = radius(points)
    print(
        f"{name:>12}: hyperbolic radius median {np.median(r):.3f} (5-95 %: "
        f"{np.percentile(r, 5):.3f}-{np.percentile(r, 95):.3f})"
    )

###############################################################################
# The whole disk
# --------------
# Texts (terms and study texts) and brain maps occupy different shells: the texts sit close
# to the origin (training draws their mean to it, the root of the term hierarchy), the maps
# far out. A few studies are joined to their own map.
rng = np.random.default_rng(0)
shown = rng.choice(len(study_text), size=1500, replace=False)
fig, ax = plt.subplots(figsize=(6.5, 6.5))
ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="k", lw=1))
ax.scatter(*disk["brain"][shown].T, s=3, alpha=0.4, color="tab:blue", label="study maps")
ax.scatter(*disk["text"][shown].T, s=3, alpha=0.4, color="tab:orange", label="study texts")
ax.scatter(*disk["terms"].T, s=3, alpha=0.4, color="tab:red", label="terms")
for i in shown[:8]:
    ax.plot(*np.stack([disk["text"][i], disk["brain"][i]]).T, color="gray", lw=0.6)
ax.set_xlim(-1.05, 1.05)
ax.set_ylim(-1.05, 1.05)
ax.set_aspect("equal")
ax.axis("off")
ax.legend(loc="lower left", markerscale=4, frameon=False)
ax.set_title("Pretrained model in the Poincaré disk")

###############################################################################
# Zoom on the terms
# -----------------
# At the scale of the whole disk the texts are a dot at the centre. Here the terms are drawn
# again, at the same exact radii, magnified, with angles from the principal plane of the
# *term* tangent vectors alone (centred), and the terms nearest to the origin (most general,
# in red) and farthest from it (most specific, in black) are labelled. The circles mark radii
# of equal generality. Training draws each term to the hyperbolic mean of the text points of
# the studies that use it: a term used by many different studies ends nearer the origin.
term_vectors = vectors["terms"]
_, _, term_axes = np.linalg.svd(term_vectors - term_vectors.mean(0), full_matrices=False)
term_disk = to_disk(term_points, plane=term_axes[:2].T)
order = np.argsort(decoder.term_radius_)
extent = 1.1 * np.abs(term_disk).max()
fig, ax = plt.subplots(figsize=(7, 7))
ax.scatter(*term_disk.T, s=3, alpha=0.25, color="tab:gray")
for g in np.percentile(decoder.term_radius_, [5, 50, 95]):
    rho_disk = np.tanh(np.sqrt(c) * g / 2)
    ax.add_patch(plt.Circle((0, 0), rho_disk, fill=False, ls="--", lw=0.6, color="k"))
ax.scatter(0, 0, marker="+", color="k", s=80)
for i, color in [(i, "tab:red") for i in order[:6]] + [(i, "k") for i in order[-6:]]:
    ax.scatter(*term_disk[i], s=12, color=color)
    ax.annotate(terms[i], term_disk[i], fontsize=8, color=color, xytext=(3, 3),
                textcoords="offset points")  # fmt: skip
ax.set_xlim(-extent, extent)
ax.set_ylim(-extent, extent)
ax.set_aspect("equal")
ax.set_title("Terms near the origin (dashed: 5th, 50th, 95th percentile of the radius)")

print("most general terms: ", ", ".join(terms[order[:10]]))
print("most specific terms:", ", ".join(terms[order[-10:]]))

###############################################################################
# Generality of free-text queries
# -------------------------------
# :meth:`~nimare_mnm.MNMEncoder.radius` gives the same distance for any text.
queries = ["memory", "working memory", "spatial working memory load", "emotion", "fear",
           "fear conditioning to faces in the amygdala"]  # fmt: skip
for query, g in zip(queries, encoder.radius(queries)):
    print(f"{g:.4f}  {query}")

###############################################################################
# Generality against term frequency
# ---------------------------------
# If the distance to the origin ordered terms from general to specific the way a corpus
# does, frequently used terms would sit nearer the origin: a negative rank correlation
# between radius and the number of studies using the term. Training draws only the terms
# with a term map (used by at least 20 training studies, ``encoder.term_map_terms_``) to the
# mean of their studies; a rarer term, which the text head barely knows, lies near the origin
# whatever it means. The correlation is therefore printed for both groups.
frequency = decoder.term_frequency_
trained = np.isin(terms, encoder.term_map_terms_)
for name, group in [("terms with a term map", trained), ("rarer terms", ~trained)]:
    rho, p = spearmanr(decoder.term_radius_[group], frequency[group])
    print(f"{name} ({group.sum()}): Spearman rho(radius, frequency) = {rho:.3f} (p = {p:.2g})")
rho = spearmanr(decoder.term_radius_[trained], frequency[trained]).statistic
fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter(frequency[~trained], decoder.term_radius_[~trained], s=3, alpha=0.3,
           color="tab:gray", label="rarer terms")  # fmt: skip
ax.scatter(frequency[trained], decoder.term_radius_[trained], s=3, alpha=0.3,
           color="tab:blue", label="terms with a term map")  # fmt: skip
ax.legend(markerscale=4, frameon=False)
ax.set_xscale("log")
ax.set_xlabel("studies using the term (log scale)")
ax.set_ylabel("radius (distance to the origin)")
ax.set_title(f"Terms: radius vs frequency (with a term map: Spearman rho = {rho:.2f})")
fig.tight_layout()
