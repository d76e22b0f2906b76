#!/usr/bin/env bash
# The GPU check of pretraining (gpu-124m: bf16, SDPA, NCCL, MFU), as ONE command on a
# machine with one CUDA GPU and no network. Run from the repository root there:
#
#   bash infra/gpu/device-check.sh
#
# Needs .whl/ made beforehand by infra/gpu/fetch-wheels.sh (on a machine with the registry)
# and carried along (device tool: carry=[".whl"], timeout_s=480). Uses the machine's own
# python3 and torch; installs the wheels into /tmp/site. Expected: about 3 to 5 minutes.
# Results: tests/benchmarks/results/pretrain-gpu-<date>.md, copied with the logs to $OUT.
set -uo pipefail
start=$SECONDS
out=${OUT:-/tmp/gpu-check-out}
mkdir -p "$out"
ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/*.whl: run infra/gpu/fetch-wheels.sh first and carry .whl"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$out/nvidia-smi.csv"
python3 - <<'PY' 2>&1 | tee "$out/versions.txt"
import sys, torch, deepspeed, transformers, pydantic
print(f"python {sys.version.split()[0]}  torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()})"
      f"  deepspeed {deepspeed.__version__}  transformers {transformers.__version__} ({transformers.__file__})  pydantic {pydantic.__version__}")
PY

# 420 s leaves the call's 480 s limit room to copy what was written.
timeout 420 python3 -m pytest -m 'benchmark and gpu' tests/benchmarks/test_pretrain_gpu.py -s -p no:cacheprovider 2>&1 \
    | tee "$out/pytest.log"
rc=${PIPESTATUS[0]}
cp tests/benchmarks/results/pretrain-gpu-*.md "$out/" 2>/dev/null
# The rank's own log of the launcher run (pytest keeps its temporary directories).
log=$(find /tmp/pytest-of-* -path '*test_launcher_path*/out/train.log' 2>/dev/null | tail -1)
[ -n "$log" ] && cp "$log" "$out/launcher-train.log"
echo "device check: pytest exit $rc after $((SECONDS - start)) s; files in $out: $(ls "$out" | tr '\n' ' ')"
exit "$rc"
