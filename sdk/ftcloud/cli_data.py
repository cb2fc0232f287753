"""``ftcloud data validate | stats`` (and ``prepare``): check and inspect training data before any GPU time.

Each command is one SDK call (:func:`ftcloud.sdk.validate_data`, :func:`ftcloud.sdk.data_stats`) plus
printing. Imports only click at start-up; the loader, transformers and matplotlib load inside the
commands. Registered from :mod:`ftcloud.cli`.
"""

from __future__ import annotations

import click

from ftcloud.cli import _as_json, _emit_json, _remember, _SpecChoice, cli

#: --json for commands without the AWS options (same meta key as common_options' --json).
json_option = click.option("--json", "as_json", is_flag=True, default=False, expose_value=False,
                           callback=_remember, help="Print machine-readable JSON on stdout.")


def source_options(f):
    """--format, --query and --table: how to read PATH... (shared by every data command)."""
    for opt in reversed([
        click.option("--format", "fmt", type=_SpecChoice("DATA_FORMATS"), default="auto", show_default=True,
                     help="Row format; auto detects it from the rows' keys and reports mixed formats."),
        click.option("--query", metavar="SQL", help="SQL sources (SQLAlchemy URL): the query that selects the rows."),
        click.option("--table", metavar="NAME", help="SQL sources (SQLAlchemy URL): read this whole table."),
    ]):
        f = opt(f)
    return f


@cli.group("data")
def data() -> None:
    """Check and inspect training data: files, directories, s3://, http(s):// or SQL.

    \b
      ftcloud data validate train.jsonl          # every problem with file:line, exit 2 if any
      ftcloud data stats train.jsonl --model M   # token lengths and what max_length will do
    """


@data.command("validate")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@source_options
@click.option("--max-problems", type=click.IntRange(1), default=20, show_default=True,
              help="List this many problems, then count the rest.")
@click.option("--max-chars", type=click.IntRange(1), default=None,
              help="Refuse rows with more characters of text than this (default 1,000,000).")
@json_option
def validate_cmd(paths: tuple[str, ...], fmt: str, query: str | None, table: str | None, max_problems: int,
                 max_chars: int | None) -> None:
    """Read every row of PATH... and list what is wrong (file:line, field, how to fix it).

    Exit code 0 when the data is clean, 2 when it is not.
    """
    from ftcloud import sdk

    report = sdk.validate_data(list(paths), fmt=fmt, max_problems=max_problems, max_chars=max_chars,
                               query=query, table=table)
    if _as_json():
        _emit_json(report.to_dict())
    else:
        click.echo(report.message())
    if not report.ok:
        raise click.exceptions.Exit(2)


@data.command("stats")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@source_options
@click.option("--model", help="Measure tokens with this model's tokenizer (Hugging Face id or local path).")
@click.option("--tokenizer", type=click.Path(exists=True), help="Measure tokens with the tokenizer in this directory.")
@click.option("--max-length", type=click.IntRange(1), help="Tokens per sample (default: the spec's max_length).")
@click.option("--overlength", type=_SpecChoice("OVERLENGTH_POLICIES"),
              help="Policy for longer rows (default: the spec's): truncate, drop or error.")
@click.option("--bins", type=click.IntRange(1, 200), default=20, show_default=True, help="Histogram bins.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also draw the length histogram into this PNG file.")
@json_option
def stats_cmd(paths: tuple[str, ...], fmt: str, query: str | None, table: str | None, model: str | None,
              tokenizer: str | None, max_length: int | None, overlength: str | None, bins: int,
              plot: str | None) -> None:
    """Counts, formats, labels, length percentiles and histogram, and what max_length will do.

    Lengths are tokens, exactly as training tokenizes (chat template, EOS), with --model or
    --tokenizer; characters without one.
    """
    from ftcloud import sdk

    if model and tokenizer:
        raise click.UsageError("give --model or --tokenizer, not both.")
    stats = sdk.data_stats(list(paths), fmt=fmt, tokenizer=tokenizer or model, max_length=max_length,
                           overlength=overlength, bins=bins, query=query, table=table)
    written = stats.save_plot(plot) if plot else None
    if _as_json():
        _emit_json({**stats.to_dict(), "plot": str(written) if written else None})
        return
    click.echo(stats.summary())
    if written:
        click.echo(f"histogram: {written}", err=True)


# `ftcloud data prepare` is added to this group by the data preparation module (one import line here).
from ftcloud import cli_prepare  # noqa: E402,F401
