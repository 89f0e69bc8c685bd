"""A sweep in this one process: the checks, then every checkpoint in plan order."""

from __future__ import annotations

from specprobe.pipeline.checkpoint import measure_checkpoint
from specprobe.pipeline.plan import SweepRequest, SweepResult, preflight, subset_notes
from specprobe.pipeline.writer import RunWriter, check_store, open_run


class LocalExecutor:
    """Measures every checkpoint here, one after the other, writing each record as it is done."""

    def run(self, request: SweepRequest) -> SweepResult:
        plan, store, resume, observer = request.plan, request.store, request.resume, request.observer
        check_store(store, resume, plan.settings)  # cheap, before the slow checks
        planned, subsets = preflight(plan, observer)

        def waiting(holder: str) -> None:
            observer.waiting(holder, store.directory)

        with store.open_for_writing(wait=resume, on_wait=waiting):
            done, warnings = open_run(plan, store, resume=resume, invocation=request.invocation)
            writer = RunWriter(plan, store, planned, done, observer, [*warnings, *subset_notes(subsets)])
            for index in writer.todo:
                writer.accept(index, measure_checkpoint(planned[index], plan, subsets, observer))
            return writer.result()
