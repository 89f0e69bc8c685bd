"""Across records: the family view, spectral reach, fits and the verdict. Data in, data out."""
