"""Container entrypoint: ``train`` (SageMaker training contract), ``serve`` (its endpoint contract)
and ``prepare`` (``data prepare``, e.g. as a SageMaker Processing job).

SageMaker runs ``docker run IMAGE train``; locally, ``python -m ftcloud_train train`` with
``FTCLOUD_ML_ROOT`` pointing at a directory laid out like ``/opt/ml``. On any failure the
reason goes to ``output/failure`` (SageMaker shows it as FailureReason) and the exit status
is non-zero.
"""

from __future__ import annotations

import os
import sys
import traceback

from ftcloud.contract import ContainerPaths

#: SageMaker truncates FailureReason; keep the useful start of the message.
MAX_FAILURE_CHARS = 1000


def write_failure(paths: ContainerPaths, message: str) -> None:
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.failure_file.with_name(".failure.tmp")
    tmp.write_text(message[:MAX_FAILURE_CHARS])
    os.replace(tmp, paths.failure_file)


def train(paths: ContainerPaths) -> int:
    from ftcloud_train.job import load_job
    from ftcloud_train.launcher import needs_relaunch, relaunch

    ctx = load_job(paths)
    nproc = needs_relaunch(ctx)
    if nproc:
        return relaunch(ctx, nproc)
    from ftcloud_train.recipe import run

    return run(ctx)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else "train"
    paths = ContainerPaths.from_env()
    if command == "train":
        from ftcloud_train.job import UserError

        try:
            return train(paths)
        except UserError as exc:
            message = str(exc)
            print(f"[ftcloud] error: {message}", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - every failure must reach output/failure
            traceback.print_exc()
            message = f"{type(exc).__name__}: {exc}"
        if int(os.environ.get("RANK", "0")) == 0 or not paths.failure_file.exists():
            write_failure(paths, message)
        return 1
    if command == "serve":
        from ftcloud_train.serving.server import main as serve  # imports nothing heavy before binding

        return serve(argv[1:])
    if command == "prepare":  # `data prepare` as a SageMaker Processing job (torch-free)
        from ftcloud_train.prepare.command import main as prepare

        return prepare(argv[1:])
    # Echo every argument so a wrong dispatch is visible in the log.
    print(f"usage: python -m ftcloud_train train|serve|prepare; got {' '.join(argv)!r}", file=sys.stderr)
    return 2
