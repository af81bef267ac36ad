"""
Decoding a statistical map into terms and studies
=================================================

Give :class:`~nimare_mnm.MNMDecoder` an unthresholded statistical map and get back the
vocabulary ranked by similarity to the map, each term's generality and the part of the map
(whole brain, a Yeo network or a subcortical structure) it matches best, then the studies
whose text is nearest to the map.

The map is nilearn's sample motor activation map (a left-hand finger-tapping contrast,
shipped with nilearn). Like the encoder, the pretrained decoder comes with the package: this
example runs offline and needs no corpus.
"""

###############################################################################
# The map to decode
# -----------------
from nilearn import plotting
from nilearn.datasets import load_sample_motor_activation_image

from nimare_mnm import MNMDecoder

img = load_sample_motor_activation_image()
plotting.plot_glass_brain(img, threshold=3.0, colorbar=True, title="nilearn sample motor map")

###############################################################################
# Load the pretrained decoder
# ---------------------------
# Its vocabulary is the NeuroQuery terms that at least one training study uses in its
# abstract; ``term_frequency_`` counts those studies.
decoder = MNMDecoder.load_pretrained(device="cpu")
print(f"{len(decoder.features_)} terms; the decoder ranks {len(decoder.study_ids_)} studies")

###############################################################################
# Rank the terms
# --------------
# :meth:`~nimare_mnm.MNMDecoder.transform` reads the map on any MNI grid (it is resampled to
# the MNI152 2 mm mask), keeps its positive part, embeds it and every one of its network and
# subcortical parts with the brain encoder, and scores each term against the whole map (the
# negative hyperbolic distance: higher is closer). ``level`` and ``region`` name the part
# the term is closest to.
terms = decoder.transform(img)
print(terms.head(15).to_string(float_format="{:.3f}".format))

###############################################################################
# Which parts of the map do the top terms point to?
# -------------------------------------------------
print(terms.head(50).groupby(["level", "region"]).size().sort_values(ascending=False))

###############################################################################
# Rank the studies
# ----------------
# :meth:`~nimare_mnm.MNMDecoder.decode_studies` ranks the training studies by the
# similarity of their text to the map. NeuroQuery ids are PubMed ids; a decoder fitted on a
# Studyset with titles (``MNMDecoder().fit(load_neuroquery(data_dir))``) adds a ``title``
# column.
studies = decoder.decode_studies(img, k=10)
print(studies)
print(
    "PubMed:", ", ".join(f"https://pubmed.ncbi.nlm.nih.gov/{pmid}" for pmid in studies.index[:3])
)

###############################################################################
# Round trip: decode a predicted map
# ----------------------------------
# The encoder behind the decoder (``decoder.encoder_``) predicts maps from text. Decoding the
# map it predicts for a query checks that the two directions agree: the query's own words
# should come back near the top.
predicted = decoder.encoder_.transform("auditory cortex response to tones").get_map("z")
plotting.plot_glass_brain(predicted, threshold=2.0, plot_abs=False, title="predicted: tones")
round_trip = decoder.transform(predicted)
print(round_trip.head(10)[["score", "radius", "generality", "level", "region"]])
print("rank of 'auditory':", round_trip.index.get_loc("auditory") + 1)
