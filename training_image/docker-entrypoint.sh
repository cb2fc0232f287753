#!/bin/sh
# SageMaker runs `docker run IMAGE train` (training jobs) or `docker run IMAGE serve` (endpoints);
# the argument replaces CMD. `exec` replaces this shell with python, so SIGTERM (stop, spot) reaches it.
set -eu
if [ "$#" -eq 0 ]; then set -- train; fi
ML_ROOT="${FTCLOUD_ML_ROOT:-/opt/ml}"

# Stop with a reason: on stderr (the job's log) and, when output/ is writable, in output/failure
# (SageMaker's FailureReason).
fail() {
  echo "ftcloud: $1" >&2
  (printf 'ftcloud: %s\n' "$1" > "$ML_ROOT/output/failure") 2>/dev/null || true
  exit 1
}

# Writable for this user, tried for real (a file created and removed): permission bits, a
# read-only mount and a file in the directory's place all fail here, whatever the uid.
writable() {
  mkdir -p "$1" 2>/dev/null || return 1
  (: > "$1/.ftcloud-write-check.$$") 2>/dev/null || return 1
  rm -f "$1/.ftcloud-write-check.$$"
}

# SageMaker mounts /opt/ml at run time (the image's build-time ownership does not apply there)
# and runs containers as root. Under any other user (`docker run --user`, a changed USER line)
# training would fail late, after loading the model; check the directories training writes
# first (output/ first, so the others can report into output/failure). `serve` only reads
# /opt/ml/model, which an endpoint may mount read-only, so it is not checked.
if [ "$1" = train ]; then
  for dir in "$ML_ROOT/output" "$ML_ROOT/model" "$ML_ROOT/checkpoints"; do
    writable "$dir" || fail "$dir is not writable by uid $(id -u) (gid $(id -g)); training writes the model, \
output and checkpoints under $ML_ROOT. SageMaker runs the image as root, its default user: do not override \
the user, or when running it yourself with --user, mount directories that user can write."
  done
fi
exec python -m ftcloud_train "$@"
