"""The computation: the eNTK's loss–network–position decomposition, its operator, the ghost
norms, the dense reference. No I/O; nothing here reads files or prints.

Entry points, by module:

- :mod:`specprobe.core.measure`: :func:`measure` (``specprobe.measure``), the decomposition
  of one batch, returning a :class:`~specprobe.core.measurement.Measurement`;
- :mod:`specprobe.core.estimators`: one trace strategy per :class:`specprobe.choices.Estimator`;
- :mod:`specprobe.core.ghost`: :class:`GhostNorms`, per-sample probe values from one backward
  pass, with a registry of layer rules (one file per rule);
- :mod:`specprobe.core.operator`: :class:`NTKOperator`, the matrix-free Θ = J Jᵀ (products
  J Jᵀ U and quadratic forms), and :class:`MatrixOperator` over an explicit Θ;
- :mod:`specprobe.core.dense`: :func:`dense_kernel`, the explicit float64 reference;
- :mod:`specprobe.core.adapters` (batches to outputs, targets, masks; the loss residual),
  :mod:`specprobe.core.params` (parameter selection and groups), :mod:`specprobe.core.probes`
  (the one probe generator), :mod:`specprobe.core.memory` (memory estimates).
"""
