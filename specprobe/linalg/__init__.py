"""Matrix-free linear algebra over one symmetric-operator protocol: eigensolvers, spectral density, trace estimates.

Everything consumes a :class:`~specprobe.linalg.protocol.SymmetricOperator` (``shape``,
``device``, ``residual``, ``matmat``, ``quadratic_form``, used as a context manager): an
:class:`specprobe.core.operator.NTKOperator` or an explicit
:class:`specprobe.core.operator.MatrixOperator`. Θ is never formed except by
:attr:`EigenMethod.DENSE`. Vectors live in output space R^D (flat order
``outputs[mask].reshape(-1)``) in float64, so the full re-orthogonalisation of the Krylov
bases costs O(D·m²) flops for a basis of m vectors and m·D·8 bytes of memory, small
against the m products (each a backward pass and a Jacobian–vector product over the batch).

Entry points:

* :func:`specprobe.linalg.spectrum.spectrum` / :func:`~specprobe.linalg.spectrum.spectrum_of`:
  top-k eigenpairs (λ_k, v_k) with honest Ritz residuals ‖Θv − λv‖/λ, convergence flags,
  and the overlaps q_k = (v_k·g)²/‖g‖² of the loss residual g (see specprobe.core.measure);
  one solver per module: :mod:`.lanczos` (block Lanczos, the default), :mod:`.lobpcg`,
  :mod:`.dense`.
* :func:`specprobe.linalg.density.spectral_density` / :func:`~specprobe.linalg.density.spectral_density_of`:
  stochastic Lanczos quadrature (SLQ): a spectral density estimate, Tr f(Θ) for any f, and
  the eigenvalue counting function #{λ ≥ t} (:func:`~specprobe.linalg.density.eigenvalue_count`).
* :func:`specprobe.linalg.trace.deflated_trace`: Tr Θ = Tr(QᵀΘQ) + Tr((I−QQᵀ)Θ(I−QQᵀ)), the
  first term exact over a top eigenspace Q (from a spectrum, or sketched as in Hutch++), the
  second by Hutchinson: a much smaller standard error than plain Hutchinson on top-heavy
  spectra.
* :func:`specprobe.linalg.summary.summarize_spectrum`: a JSON-ready dict of spectrum
  summaries (top eigenvalues, λ_k/TrΘ, captured residual mass, position index, effective
  rank, power-law exponent); :func:`~specprobe.linalg.summary.spectral_record` runs it all
  for a results record; :mod:`.fit` is the one power-law fit.
"""
