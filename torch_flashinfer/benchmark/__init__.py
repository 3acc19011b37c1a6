"""Benchmarks of the ``flashinfer`` ops against PyTorch's attention backends, in one process.

``python -m torch_flashinfer.benchmark --suite {seed,llm,quick}`` (``__main__``). Data flows one way:
``suites`` (the scenarios: lists of ``schema.Case``) -> ``runner`` (each case through the
``backends``, timed by ``timing``) -> ``schema`` rows -> ``report`` (table, JSON, charts).
"""
