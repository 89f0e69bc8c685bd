"""The result store: the run folder, its lock, the results file, the record schema, frames.

Entry points: :class:`specprobe.store.results.ResultStore` (``specprobe.ResultStore``),
:func:`specprobe.store.frames.load_results` and :func:`~specprobe.store.frames.load_batches`
(pandas), :mod:`specprobe.store.records` (the schema of a record),
:func:`specprobe.store.folder.check_run_folder` and :class:`specprobe.store.lock.RunLock`.
"""
