"""ftcloud platform: the CDK app platform teams deploy (``cdk deploy`` from the repository root).

One construct per capability, each in its own module: ``storage``, ``image``, ``iam``, ``network``,
``registry``, ``training_workflow``, ``endpoint``, ``monitoring``; ``config`` reads and validates
the context, ``stack`` composes them, ``app`` is the entry point named in ``cdk.json``.
"""
