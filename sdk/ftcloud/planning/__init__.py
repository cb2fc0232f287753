"""Planning before launch: which base model, how much GPU memory, which instance, how long, how much.

* :mod:`~ftcloud.planning.catalog` - architecture facts of popular base models, or of any model
  from its ``config.json``;
* :mod:`~ftcloud.planning.instances` - the SageMaker training-instance table (GPUs, memory, price);
* :mod:`~ftcloud.planning.memory` - peak GPU memory per technique, component by component;
* :mod:`~ftcloud.planning.throughput` - tokens/s, time and cost (an estimate, labelled so);
* :mod:`~ftcloud.planning.plan` - all of it for one job spec: fits or not, recommendation, alternatives.

Pure Python, import-light: no torch, no boto3. Formulas and sources: docs/plan.md.
"""
