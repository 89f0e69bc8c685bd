"""Across records: the family view, spectral reach, fits and the verdict. Data in, data out.

Entry point: :func:`specprobe.analysis.family.summarize` (reach per model, the power-law
fits against size, position against compute, amplification, the verdict). The parts:
:mod:`.position` (which position, grouping), :mod:`.sizes` (reach and fits),
:mod:`.series`, :mod:`.verdict`, and :mod:`.reach` (the reach statistics of the study).
"""
