#!/usr/bin/env bash
# End-to-end local demo (no AWS account, no downloads):
#   1. generate a tiny Llama + tokenizer and a learnable chat data set,
#   2. fine-tune it with QLoRA through the CLI's local backend (same container entrypoint as SageMaker),
#   3. show the job's status and metrics from a separate CLI call, then ask the tuned model a question.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${FTCLOUD_DEMO_DIR:-$(mktemp -d -t ftcloud-demo-XXXX)}"
export FTCLOUD_HOME="${FTCLOUD_HOME:-$WORK/home}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
JOB="demo-qlora-$(date +%s)"

echo "== 1/3 generating a tiny model and data in $WORK"
python -m ftcloud_train.tiny model "$WORK/tiny-llama" --hidden-size 128 --layers 4 >/dev/null 2>&1
python -m ftcloud_train.tiny data "$WORK/train.jsonl" --rows 240 --max-filler 1 >/dev/null

echo "== 2/3 fine-tuning with QLoRA (4-bit NF4 base, LoRA adapters) on the local backend"
ftcloud launch --backend local --name "$JOB" --technique qlora \
  --model "$WORK/tiny-llama" --data "$WORK/train.jsonl" \
  --set max_steps=300 --set per_device_train_batch_size=8 --set gradient_accumulation_steps=1 \
  --set learning_rate=3e-3 --set max_length=128 --set logging_steps=25 --set save_steps=100 \
  --wait

echo "== 3/3 results"
ftcloud status "$JOB" --backend local
python examples/ask.py "$FTCLOUD_HOME/jobs/$JOB/ml/model" "$WORK/tiny-llama" "What colour is sky?" "What colour is grass?"
