"""``python -m ftcloud_train prepare PATH... --out DIR [options]``: the container's side of ``data prepare``.

The same code the CLI runs locally; a SageMaker Processing job runs it on every instance with
``--part auto``: each instance names its output files after its host (``train/algo-2.jsonl``),
so the instances' outputs, uploaded to one S3 prefix, never overwrite each other.
Exit status: 0 ok, 2 bad data or option (message on stderr; nothing written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ftcloud.contract import PROCESSING_EXIT_MESSAGE, PROCESSING_RESOURCE_CONFIG, ContainerPaths
from ftcloud_train.prepare.options import add_argparse_options, options_from_namespace


def current_host(root: str | None = None) -> str:
    """This instance's host name from SageMaker's resource config (``algo-1`` when absent)."""
    path = ContainerPaths.from_env(root).root / PROCESSING_RESOURCE_CONFIG
    try:
        return str(json.loads(path.read_text())["current_host"])
    except (OSError, ValueError, KeyError):
        return "algo-1"


def write_exit_message(message: str) -> None:
    path = ContainerPaths.from_env().root / PROCESSING_EXIT_MESSAGE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(message.encode("utf-8")[:1024].decode("utf-8", "ignore").encode("utf-8"))
    except OSError:
        pass  # a read-only root must not hide the error already printed


def _empty_shard(sources: list[str]) -> bool:
    from ftcloud_train.datasource import DATA_SUFFIXES

    dirs = [Path(s) for s in sources]
    return all(d.is_dir() for d in dirs) and not any(
        p.is_file() and p.suffix.lower() in DATA_SUFFIXES for d in dirs for p in d.rglob("*"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ftcloud_train prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", help="files, directories, s3:// or http(s):// URIs, or a SQLAlchemy URL")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", dest="fmt", default="auto", help="row format (default: detect)")
    p.add_argument("--file-format", default="auto", help="file format (default: from the suffix)")
    p.add_argument("--query", help="SQL query (SQL sources)")
    p.add_argument("--table", help="SQL table (SQL sources)")
    p.add_argument("--part", help="write this part's files (train/PART.jsonl ...); 'auto' = this host's name")
    add_argparse_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from ftcloud.errors import FtcloudError
    from ftcloud_train.prepare.options import OptionsError
    from ftcloud_train.prepare.pipeline import prepare

    args = parser().parse_args(argv)
    part = current_host() if args.part == "auto" else args.part
    if part and _empty_shard(args.sources):
        # ShardedByS3Key hands out whole objects: with more instances than files some get none.
        print(f"[ftcloud] {part}: no input files for this instance (more instances than files); nothing to do.")
        return 0
    try:
        result = prepare(args.sources, args.out, options_from_namespace(args), fmt=args.fmt,
                         file_format=args.file_format, query=args.query, table=args.table, part=part,
                         log=lambda m: print(f"[ftcloud] {m}", flush=True))
    except (FtcloudError, OptionsError) as exc:
        print(f"[ftcloud] error: {exc}", file=sys.stderr, flush=True)
        if part:  # in a Processing job: the reason shows as the job's ExitMessage
            write_exit_message(str(exc))
        return 2
    print(json.dumps({"out": str(result.out), "cached": result.cached, "counts": result.card.get("counts")}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
