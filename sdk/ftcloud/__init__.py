"""ftcloud: fine-tune LLMs with LoRA, QLoRA, DoRA or full fine-tuning, locally or on SageMaker.

Import-light: heavy packages (boto3, torch, transformers) load only inside the calls that need them.
"""

from ftcloud.spec import SpecError, TrainingSpec

__version__ = "0.1.0"

__all__ = ["SpecError", "TrainingSpec", "__version__"]
