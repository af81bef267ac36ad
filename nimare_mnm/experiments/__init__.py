"""Experiments: the evaluation harness, its baselines and floors, and the decoding benchmark.

Nothing here is imported by ``import nimare_mnm`` or by the estimators: the harness depends on
the optional ``neuroquery`` package (``pip install "nimare-mnm[benchmark]"``) and on the
estimators, never the other way round.
"""
