#!/usr/bin/env bash
# End-to-end local demo (no AWS account, no downloads): the whole lifecycle on the local backend.
#   1. generate a tiny Llama + tokenizer, a learnable chat data set and held-out questions,
#   2. fine-tune it with QLoRA through the CLI (same container entrypoint as SageMaker),
#   3. register the job as a model version and approve it,
#   4. deploy the approved version as a local endpoint (the image's `serve`),
#   5. ask it the held-out questions in one concurrent burst and score it, then undeploy.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${FTCLOUD_DEMO_DIR:-$(mktemp -d -t ftcloud-demo-XXXX)}"
export FTCLOUD_HOME="${FTCLOUD_HOME:-$WORK/home}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
JOB="demo-qlora-$(date +%s)"
ENDPOINT=""
PHRASINGS=4

# The endpoint is a detached server: stop it however this script ends.
cleanup() {
  if [[ -n "$ENDPOINT" ]]; then
    ftcloud undeploy "$ENDPOINT" --backend local >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

echo "== 1/5 generating a tiny model, data and held-out questions in $WORK"
python -m ftcloud_train.tiny model "$WORK/tiny-llama" --hidden-size 128 --layers 4 >/dev/null 2>&1
# Every fact is trained in 3 of 4 phrasings; the 4th (a different one per fact) is held out.
python -m ftcloud_train.tiny data "$WORK/train.jsonl" --rows 320 --max-filler 1 \
  --phrasings "$PHRASINGS" --hold-out >/dev/null
python -m ftcloud_train.tiny heldout "$WORK/heldout.jsonl" --phrasings "$PHRASINGS" >/dev/null

echo "== 2/5 fine-tuning with QLoRA (4-bit NF4 base, LoRA adapters) on the local backend"
ftcloud launch --backend local --name "$JOB" --technique qlora \
  --model "$WORK/tiny-llama" --data "$WORK/train.jsonl" \
  --set max_steps=300 --set per_device_train_batch_size=8 --set gradient_accumulation_steps=1 \
  --set learning_rate=3e-3 --set max_length=128 --set logging_steps=25 --set save_steps=100 \
  --wait
ftcloud status "$JOB" --backend local

echo "== 3/5 registering the job as a model version and approving it"
REF="$(ftcloud register "$JOB" --backend local --json | python -c 'import json, sys; print(json.load(sys.stdin)["ref"])')"
ftcloud approve "$REF" --backend local --reason "demo: trained on generated data"
ftcloud versions --backend local

echo "== 4/5 deploying $REF as a local endpoint"
ENDPOINT="$JOB"
ftcloud deploy "$REF" --backend local --name "$ENDPOINT"

echo "== 5/5 asking held-out questions (phrasings never trained for that fact), all at once"
python examples/evaluate.py "$ENDPOINT" "$WORK/heldout.jsonl" --train "$WORK/train.jsonl"
ftcloud undeploy "$ENDPOINT" --backend local
ENDPOINT=""
