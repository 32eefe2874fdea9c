#!/usr/bin/env bash
# The GPU checks in one run, for a GPU machine with torch but without this project's other needs.
#
#   python benchmarks/gpu_prep.py          # here: writes .whl/ (wheels) and .gpu/photos/ (320 pictures)
#   bash benchmarks/gpu_check.sh           # there, from the repository root, with .whl and .gpu carried
#
# Installs the carried wheels, then: Quick and Fine-tune on the 320 pictures from the command line,
# export of the fine-tuned model with its parity check, torchrun with more processes than GPUs
# (must be refused in one line), benchmarks/speed.py with every arm on the GPU, and the engine
# tests. Each step's output goes to $OUT/<step>.log; one line per step to stdout and $OUT/summary.txt.
# DEVICE=cpu runs the same steps on a CPU, and PHOTOS=FOLDER on other pictures (to try the script
# itself on a machine without a GPU, on fewer pictures). Expected on one H200: about 6 minutes.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
WORK=$(mktemp -d)  # the bundles and exports: only the 7 text files in $OUT need to come back
DEVICE=${DEVICE:-cuda}
PHOTOS=${PHOTOS:-.gpu/photos}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
failed=0

# step NAME SECONDS COMMAND...: run COMMAND with a time limit, log it, print one line
step() {
  local name=$1 limit=$2; shift 2
  local start=$EPOCHREALTIME
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local line
  line=$(printf '%-10s rc=%-3s %6.1f s' "$name" "$rc" "$(python3 -c "print($EPOCHREALTIME - $start)")")
  echo "$line" | tee -a "$OUT/summary.txt"
  return $rc
}

python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$OUT/summary.txt"
nvidia-smi -L 2>/dev/null | tee -a "$OUT/summary.txt"

step quick 90 python3 -m transfer_gui train "$PHOTOS" --mode quick --device "$DEVICE" --out "$WORK/quick" || failed=1
step finetune 150 python3 -m transfer_gui train "$PHOTOS" --mode finetune --epochs 4 --batch-size 32 \
  --device "$DEVICE" --out "$WORK/finetune" || failed=1
tail -n 1 "$OUT/finetune.log" | cut -c1-400 >>"$OUT/summary.txt"
# the exports run on the CPU and are held to the model in fp32 on the CPU
step export 120 python3 -m transfer_gui export "$WORK/finetune" --out "$WORK/exported" --images "$PHOTOS/tool" || failed=1
grep "parity check" "$OUT/export.log" | tee -a "$OUT/summary.txt"
# two processes, a GPU asked for, one GPU (or none): refused, rank 0 alone says why
step torchrun2 90 python3 -m torch.distributed.run --standalone --nproc_per_node=2 -m transfer_gui train "$PHOTOS" \
  --device cuda --out "$WORK/ddp2"
if [ "$(grep -c '^error: torchrun started 2 processes' "$OUT/torchrun2.log")" != 1 ]; then
  echo "torchrun2: expected exactly one refusal line" | tee -a "$OUT/summary.txt"; failed=1
fi
grep '^error:' "$OUT/torchrun2.log" | tee -a "$OUT/summary.txt"
step speed 300 python3 benchmarks/speed.py --device "$DEVICE" || failed=1
grep '^|\|^model' "$OUT/speed.log" | tee -a "$OUT/summary.txt"
# the engine's tests (the files that do not need gradio)
step tests 300 python3 -m pytest -q -x -p no:cacheprovider tests/engine/test_training.py tests/engine/test_speed.py \
  || failed=1
tail -n 3 "$OUT/tests.log" | tee -a "$OUT/summary.txt"
exit $failed
