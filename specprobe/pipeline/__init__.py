"""Sweeps: a plan of checkpoints, one checkpoint measured into one record, written by one
writer, locally or across launched processes.

Entry points: :func:`specprobe.pipeline.sweep.run_sweep` and
:func:`~specprobe.pipeline.sweep.sweep_into` (what ``analyze``, ``run`` and the demo call),
:class:`specprobe.pipeline.probe.Probe` (``specprobe.Probe``: repeated measurement in
training), :class:`specprobe.pipeline.trainer.SpecprobeCallback`, and
:func:`specprobe.pipeline.onnx.measure_onnx_files`. The parts: :mod:`.plan` (the plan and its
checks), :mod:`.checkpoint` (one checkpoint → one record), :mod:`.writer` (the one writer),
:mod:`.local` and :mod:`.launched` (the executors), :mod:`.processes` (a launch's processes).
"""
