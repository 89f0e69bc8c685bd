"""The analysis half of the demo: :func:`demo_plan`, the sweep over the trained family.

(The original family, ``tiny-neox``, is measured by the command line through the bundled
``tiny-local`` recipe instead, the same analysis as ``specprobe run tiny-local``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from specprobe.demo.config import DemoConfig, DemoLayout

if TYPE_CHECKING:
    from specprobe.pipeline.plan import SweepPlan


def demo_plan(out_dir: Path | str, config: DemoConfig | None = None) -> SweepPlan:
    """The ``SweepPlan`` that measures every checkpoint of the trained family on the held-out
    documents (or, with ``measure_on="train"``, the training documents; Hutchinson,
    ``config.probes`` probes per batch, the same token subset for all models: they share
    the tokenizer, so positions compare at equal D)."""
    from specprobe.choices import Device
    from specprobe.config import DataSpec, ProbeSpec
    from specprobe.core.measure import Estimator
    from specprobe.pipeline.plan import ModelSpec, SweepPlan

    config = config or DemoConfig()
    layout = DemoLayout(Path(out_dir))
    models = tuple(ModelSpec(id=str(layout.model_dir(name)), label=name) for name in config.model_names())
    corpus = layout.train_corpus if config.measure_on == "train" else layout.eval_corpus
    data = DataSpec(
        dataset=str(corpus),
        num_sequences=config.eval_sequences,
        seq_len=config.eval_seq_len,
        batch_size=config.eval_batch_size,
        seed=config.seed,
    )
    probe = ProbeSpec(
        estimator=Estimator.HUTCHINSON_PER_SAMPLE,
        probes=config.probes,
        seed=config.seed,
        device=Device(config.device),
    )
    return SweepPlan(models=models, data=data, probe=probe)
