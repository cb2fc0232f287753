"""CDK entry point (``cdk.json``: ``python3 -m infra.app``) and the factory tests use.

``cdk synth`` passes ``cdk.json``'s context (plus ``-c`` values) through the environment; plain
``python -m infra.app`` and pytest do not, so :func:`build_app` merges ``cdk.json``'s context in
itself. The CLI's values are applied on top by ``App`` and win.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
if not __package__:  # run as a script (`python3 infra/app.py`): make `infra` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aws_cdk import App  # noqa: E402  (after the env default above, which jsii reads at import)

from infra.config import ConfigError, PlatformConfig, load_cdk_json_context  # noqa: E402
from infra.nag import add_nag_checks  # noqa: E402
from infra.stack import PlatformStack  # noqa: E402

STACK_DESCRIPTION = (
    "ftcloud: fine-tuning platform on SageMaker (storage, image, roles, workflow, endpoint, alarms)"
)


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    nag: bool = True,
    cfn_validation: bool | None = None,
) -> tuple[App, PlatformStack]:
    """Build the app with ``cdk.json``'s context overlaid by ``context``; nothing is synthesized yet.

    ``nag`` registers the cdk-nag AwsSolutions plugin (an open finding fails ``synth``).
    ``cfn_validation`` turns CDK's built-in CloudFormation validation on/off (``None``: CDK's
    default, which ``cdk synth --no-validation`` and ``CDK_VALIDATION=false`` control).
    Raises :class:`ConfigError` for invalid context.
    """
    app = App(
        context={**load_cdk_json_context(), **(context or {})},
        outdir=outdir,
        # No CDKMetadata resource: the template depends only on the code and the context.
        analytics_reporting=False,
        builtin_cloud_formation_validation=cfn_validation,
    )
    config = PlatformConfig.from_context(app.node.get_all_context())
    stack = PlatformStack(app, config.stack_name, config=config, description=STACK_DESCRIPTION)
    if nag:
        add_nag_checks(app)
    return app, stack


def main() -> int:
    try:
        app, _ = build_app()
    except ConfigError as err:
        print(f"ftcloud infra: {err}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
