"""Benchmarks: the paper's synthetic recovery study and an eBay-sized scale test.

Run them as modules: ``python -m benchmarks.synthetic_recovery`` and
``python -m benchmarks.scale``. They print only what they measure.
"""
