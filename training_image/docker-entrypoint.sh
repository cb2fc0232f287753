#!/bin/sh
# SageMaker passes "train" (training jobs) or "serve" (endpoints) as the container's argument.
set -e
if [ "$#" -eq 0 ]; then set -- train; fi
exec python -m ftcloud_train "$@"
