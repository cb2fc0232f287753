"""The README stays true: its hyperparameter table is the spec's, its commands exist."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_hyperparameter_table_matches_the_spec():
    from ftcloud.spec import markdown_table

    assert markdown_table() in (ROOT / "README.md").read_text(), (
        "README's hyperparameter table is stale: paste the output of "
        "python -c 'from ftcloud.spec import markdown_table; print(markdown_table())'"
    )


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_relative_links_resolve():
    import re

    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to missing {target}"
