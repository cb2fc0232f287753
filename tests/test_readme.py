"""The README and docs/ stay true: tables are the code's, every command and flag is documented.

(Links and anchors are checked in tests/test_docs_links.py; the platform page in tests/infra/test_docs.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Pages that document CLI commands: job commands first, then one page per area (those that exist).
COMMAND_PAGES = tuple(
    page
    for page in (DOCS / name for name in ("cli.md", "serving.md", "tuning.md", "data.md", "plan.md", "watching.md"))
    if page.exists()
)


def test_hyperparameter_table_matches_the_spec():
    from ftcloud.spec import markdown_table

    assert markdown_table() in (DOCS / "container.md").read_text(), (
        "docs/container.md's hyperparameter table is stale: paste the output of "
        "python -c 'from ftcloud.spec import markdown_table; print(markdown_table())'"
    )


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _commands():
    """(``"platform use"``, click command) for every command and group subcommand of ``ftcloud``."""
    from ftcloud.cli import cli

    def walk(group, prefix):
        for name, command in sorted(group.commands.items()):
            yield f"{prefix}{name}", command
            if hasattr(command, "commands"):
                yield from walk(command, f"{prefix}{name} ")

    return list(walk(cli, ""))


def _documented_on(path: str) -> Path | None:
    """The page with a heading naming ``ftcloud <path>``, or a usage line starting with it."""
    named = re.compile(rf"ftcloud {re.escape(path)}(?![\w-])")
    for page in COMMAND_PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            if (line.startswith("#") and named.search(line)) or named.match(line.removeprefix("$ ")):
                return page
    return None


def test_every_cli_command_is_documented():
    commands = _commands()
    assert {"launch", "platform use", "deploy", "register"} <= {path for path, _ in commands}
    missing = [path for path, _ in commands if _documented_on(path) is None]
    assert not missing, (
        f"commands without a heading (or usage line) naming 'ftcloud <command>' in one of "
        f"{', '.join('docs/' + p.name for p in COMMAND_PAGES)}: {', '.join(missing)}"
    )


def test_every_option_is_named_on_its_commands_page():
    import click

    shared = {"--backend", "--stack", "--profile", "--region", "--json", "--help", "-h"}
    missing = []
    for path, command in _commands():
        page = _documented_on(path)
        if page is None:
            continue  # reported by test_every_cli_command_is_documented
        text = page.read_text(encoding="utf-8")
        for param in command.params:
            names = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
            if isinstance(param, click.Option) and not set(names) & shared:
                if not any(re.search(rf"{re.escape(n)}(?![\w-])", text) for n in names):
                    missing.append(f"ftcloud {path} {'/'.join(names)} (docs/{page.name})")
    assert not missing, "options not documented:\n" + "\n".join(missing)


def test_serving_knobs_table_is_the_contracts():
    from ftcloud.contract import (
        DEFAULT_SERVE_HOST,
        DEFAULT_SERVE_PORT,
        SERVE_ENV_DEFAULTS,
        SERVE_HOST_ENV,
        SERVE_PORT_ENV,
    )

    lines = (DOCS / "serving.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| variable | default | what it does |")
    documented = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        name, default = (cell.strip().strip("`") for cell in line.split("|")[1:3])
        documented[name] = "" if default == "(none)" else default
    expected = {**SERVE_ENV_DEFAULTS, SERVE_PORT_ENV: str(DEFAULT_SERVE_PORT), SERVE_HOST_ENV: DEFAULT_SERVE_HOST}
    assert documented == expected, "docs/serving.md's serving knobs table differs from ftcloud.contract"
