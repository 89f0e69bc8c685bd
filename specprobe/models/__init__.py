"""Loading: Hugging Face checkpoints and revisions, datasets and token subsets, tiny models,
ONNX graphs. The only package that loads a model with transformers.

Entry points, by module: :mod:`specprobe.models.hub` (:func:`find_checkpoints`,
:func:`resolve_commit`: where checkpoints are, one attempt at the hub),
:mod:`specprobe.models.loading` (:func:`load_checkpoint`, :func:`inspect_checkpoint`),
:mod:`specprobe.models.data` (:func:`build_subset`: a token subset and its fingerprint),
:mod:`specprobe.models.fingerprint`, :mod:`specprobe.models.tiny` (:func:`tiny_causal_lm`),
:mod:`specprobe.models.onnx` (an ONNX graph as a module).
"""
