"""The offline demo: a synthetic language, a family of tiny models trained on it, and its sweep.

Everything is made here, from a seed, offline. The entry points, by module:

- :mod:`specprobe.demo.config`: :class:`DemoConfig` (corpus, models, training, measurement)
  and :class:`DemoLayout` (where the demo writes under its output directory);
- :mod:`specprobe.demo.presets`: :data:`PRESETS`, :func:`preset` and :data:`DEFAULT_PRESET`,
  the configurations of ``specprobe demo --preset``, each with its measured cost;
- :mod:`specprobe.demo.language`: :func:`generate_corpus` (the synthetic language, simple or
  long-tail), :func:`make_lexicon`, :func:`token_stream`;
- :mod:`specprobe.demo.training`: :func:`train_family` (corpus, tokenizer and the trained
  family with its checkpoints), :func:`build_model`, :class:`TrainingProgress`;
- :mod:`specprobe.demo.plan`: :func:`demo_plan`, the sweep that measures the family
  (``specprobe.pipeline.sweep.run_sweep`` over ``<out>/family/*``, on held-out documents);
- :mod:`specprobe.demo.prepare`: :func:`prepare`, what ``specprobe demo`` calls: reuse the
  finished family in the output directory when it was trained with the same settings, or
  train it.

Nothing is imported here, so that reading the presets (the command line's ``--help``) does
not load torch.
"""
