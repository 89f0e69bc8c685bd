"""Matrix-free linear algebra over one symmetric-operator protocol: eigensolvers, spectral density, trace estimates."""
