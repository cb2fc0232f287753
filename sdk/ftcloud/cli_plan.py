"""``ftcloud plan | models``: know before launch whether a job fits, on what instance, for how much.

``plan`` takes exactly the spec options of ``launch`` (the same click options, copied from the
launch command, so there is one parser) plus ``--dataset-tokens``; it is one SDK call
(:meth:`ftcloud.sdk.Client.plan`) plus printing. Registered from :mod:`ftcloud.cli`.
"""

from __future__ import annotations

from typing import Any

import click

from ftcloud.cli import _as_json, _client, _emit_json, cli, common_options, job_options
from ftcloud.cli import launch as _launch

GIB = 2**30


def _spec_params() -> list[click.Parameter]:
    """launch's options that build the spec (flat keys, --config, --set) and the common ones;
    not what launch does afterwards (--wait, --dry-run, --force, ...)."""
    return [*job_options(), *(p for p in _launch.params if not p.expose_value)]


def _plan(config: str | None, set_values: tuple[str, ...], dataset_tokens: int | None, **flags: Any) -> None:
    overrides = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flags.items()}
    overrides = {k: v for k, v in overrides.items() if v is not None and v != []}
    result = _client().plan(config=config, set_values=list(set_values), dataset_tokens=dataset_tokens, **overrides)
    if _as_json():
        _emit_json(result.to_dict())
    else:
        _print_plan(result)
    if not result.fits:
        raise click.exceptions.Exit(1)


plan_command = click.Command(
    "plan",
    callback=_plan,
    params=[
        *_spec_params(),
        click.Option(["--dataset-tokens"], type=click.IntRange(1), metavar="N",
                     help="Training tokens per epoch, for data the planner cannot read (s3://). "
                          "Default: counted from local data, or max_steps."),
    ],
    help="Estimate GPU memory, the cheapest instance that fits, time and cost of a job; create nothing.\n\n"
         "Takes the same job file and flags as 'ftcloud launch'. Exits 1 when the job does not fit "
         "(the chosen instance, or any instance for instance_type auto), printing what would make it fit.",
    epilog="Estimates: formulas, sources and the price table's date in docs/plan.md.",
    context_settings={"max_content_width": 100},
)
cli.add_command(plan_command)


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _print_plan(p: Any) -> None:
    counts = p.model.parameter_counts()
    size = f"{counts['total'] / 1e9:.1f}B parameters"
    if p.model.is_moe:
        size += f", {counts['active'] / 1e9:.1f}B active"
    click.echo(f"{p.model.name} · {p.technique} · {size}")
    fit = p.chosen or p.recommended or p.largest
    if fit is not None:
        where = "chosen" if p.chosen is not None else ("recommended" if p.recommended else "largest GPU")
        click.echo(f"\nMemory per GPU on {fit.instance.type} ({where}; {fit.instance.gpus}x {fit.instance.gpu} "
                   f"{fit.instance.gpu_memory_gib:g} GiB), estimate:")
        for name, value in fit.memory.components.items():
            click.echo(f"  {name:<16}{_gib(value):>11}")
        verdict = "CANNOT RUN (see below)" if fit.memory.unsupported else ("fits" if fit.fits else "DOES NOT FIT")
        click.echo(f"  {'total':<16}{_gib(fit.memory.total):>11}   {verdict} ({_gib(fit.usable_bytes)} usable)")
    if not p.fits:
        click.echo("\n" + p.problem())
    if p.recommended is not None:
        r = p.recommended
        click.echo(f"\nRecommended: {r.instance.type} ({r.instance.gpus}x {r.instance.gpu} "
                   f"{r.instance.gpu_memory_gib:g} GiB), the cheapest that fits: ${r.instance.price_per_hour:.2f}/h "
                   f"on demand, about ${r.hourly(True):.2f}/h spot.")
    if p.options:
        click.echo("\nInstances that fit (time and cost: estimate; prices "
                   f"{p.to_dict()['prices']['region']}, {p.to_dict()['prices']['date']}):")
        rows = [("instance", "GPUs", "needs/GPU", "tokens/s", "hours", "on demand", "spot")]
        for f in p.options[:8]:
            t = f.time
            rows.append((f.instance.type, f"{f.instance.gpus}x {f.instance.gpu}", _gib(f.memory.total),
                         f"{t.tokens_per_second:,.0f}", "-" if t.hours is None else f"{t.hours:.1f}",
                         _money(t.on_demand_usd), _money(t.spot_usd)))
        _table(rows)
    if p.alternatives:
        click.echo("\nTo make it fit:")
        for a in p.alternatives:
            click.echo(f"  {a.change}: {_gib(a.fit.memory.total)} per GPU on {a.fit.instance.type}")
    click.echo(f"\nTokens: {p.tokens_note}.")
    for note in p.notes:
        click.echo(f"note: {note}")


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@cli.command()
@click.argument("model", required=False)
@common_options
def models(model: str | None) -> None:
    """List the base-model catalog, or show one model (a catalog id or a local directory with config.json).

    Any model works with 'ftcloud plan' through its config.json; the catalog is a convenience.
    """
    from ftcloud.planning.catalog import CATALOG, resolve_model

    found = [resolve_model(model)] if model else list(CATALOG.values())
    if _as_json():
        _emit_json([m.to_dict() for m in found])
        return
    rows = [("model", "params", "active", "layers", "hidden", "heads/kv", "vocab", "context", "license", "techniques")]
    for m in found:
        c = m.parameter_counts()
        rows.append((
            m.name, f"{c['total'] / 1e9:.2f}B", f"{c['active'] / 1e9:.2f}B", str(m.layers), str(m.hidden),
            f"{m.heads}/{m.kv_heads}", str(m.vocab), str(m.context or "-"),
            (m.license or "-") + (" (gated)" if m.gated else ""), ",".join(m.recommended) or "-",
        ))  # fmt: skip
    _table(rows)
    notes = [f"{m.name}: {m.notes}" for m in found if m.notes]
    for note in notes:
        click.echo(f"note: {note}")
