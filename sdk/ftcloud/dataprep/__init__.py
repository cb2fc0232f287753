"""The SDK side of ``data prepare``: run the container's pipeline locally, or as a SageMaker
Processing job (:mod:`ftcloud.dataprep.processing`). The pipeline itself is
:mod:`ftcloud_train.prepare` (shared with the image, torch-free)."""
