"""The library's defaults are the command line's: `measure`, `Probe` and the Trainer
callback (which measures through a `Probe`) measure as `specprobe analyze` does by default,
so library records carry the same headline numbers (the population position, B_noise)."""

from __future__ import annotations

import inspect

import typer.main

import specprobe
from specprobe.cli import app
from specprobe.config import ProbeSpec


def cli_default(command: str, name: str) -> object:
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="specprobe")
    params = {p.name: p for p in group.get_command(ctx, command).params}
    default = params[name].default
    return getattr(default, "value", default)


def test_measure_and_probe_default_to_the_cli_estimator_and_probes() -> None:
    measure = inspect.signature(specprobe.measure).parameters
    probe = inspect.signature(specprobe.Probe).parameters
    spec = ProbeSpec()
    for name in ("estimator", "probes"):
        cli = cli_default("analyze", name)
        assert getattr(measure[name].default, "value", measure[name].default) == cli, name
        assert getattr(probe[name].default, "value", probe[name].default) == cli, name
        assert getattr(getattr(spec, name), "value", getattr(spec, name)) == cli, name
    assert cli_default("analyze", "estimator") == "hutchinson_per_sample"
    assert measure["population"].default is True


def test_a_default_probe_records_the_population_position() -> None:
    import torch

    from specprobe.models.tiny import tiny_causal_lm

    ids = torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(0))
    probe = specprobe.Probe({"input_ids": ids}, probes=4, schedule=[0])
    m = probe.maybe_measure(0, tiny_causal_lm("gpt_neox"))
    assert m is not None and m.estimator == "hutchinson_per_sample"
    # a random model's estimate may come out ≤ 0 (then B_noise is None): it is there, flagged
    assert m.population_position is not None and m.population_position_stderr is not None
    assert m.population_status in ("ok", "noisy", "nonpositive")


def test_a_default_probes_run_reports_on_the_population_position(tmp_path: object) -> None:
    """`specprobe report` on a library run compares the population position, as on a
    command-line run, and never calls fresh records "as earlier versions wrote them"."""
    import torch

    from specprobe.analysis.position import Position
    from specprobe.models.tiny import tiny_causal_lm
    from specprobe.report.document import build_document
    from specprobe.store.results import ResultStore

    out = f"{tmp_path}/run"
    ids = torch.randint(0, 64, (6, 12), generator=torch.Generator().manual_seed(1))
    probe = specprobe.Probe({"input_ids": ids}, probes=4, schedule=[0, 1], out=out)
    model = tiny_causal_lm("gpt_neox")
    for step in (0, 1):
        probe.maybe_measure(step, model)
    doc = build_document(ResultStore(out).records())
    assert doc.position is Position.POPULATION
    assert "earlier versions" not in doc.statistic
