#!/bin/bash
# Every CPU speed figure fastsr reports, in one prepared run: for a CPU that has no results in
# benchmarks/results/ yet (one with AVX512-BF16 or AMX above all: the bf16 figures). From the
# project root, after the README's install, on an otherwise idle machine:
#     bash benchmarks/cpu_run.sh              # about 1-2 h on 2 cores (RRDBNet is most of it)
#     QUICK=1 bash benchmarks/cpu_run.sh      # fewer rounds, 128 px only, no RRDBNet: ~25 min
#     TAG=spr bash benchmarks/cpu_run.sh      # results in benchmarks/results/cpu_spr/
#     SMOKE=1 bash benchmarks/cpu_run.sh      # tiny shapes into /tmp/fastsr-cpu-smoke: tests the script
# In order (each step's output in the results folder; a step that fails is reported and the
# next one runs):
#   machine.md       CPU model and flags, torch, what fastsr picks here (precision, Winograd)
#   parity.log       bf16 against fp32 on photographs (tests/test_inference.py), the fp32 and
#                    bf16 Winograd kernels against their references (tests/test_winograd.py)
#   inference.md     inference_cpu.py: eager fp32 / bf16 + channels_last, torch.compile with
#                    freezing, onnxruntime, OpenVINO, fastsr (the "unprepared" row is the
#                    upscale default before optimize_for_inference), one thread
#   train_step.md    train_step_cpu.py: one PSNR step, plain vs fused, fp32 and (bf16 CPUs) bf16
#   iteration.*      fastsr bench: the GAN iteration, eager fp32 (2), the default (8), plain
#                    PyTorch with every setting that is not a fastsr op (9, 10, 11), the default
#                    without Winograd (12), in fp32 (13) and with oneDNN's bf16 weight gradient (14)
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1
flags=$(grep -m1 '^flags' /proc/cpuinfo)
isa=avx2
[[ $flags == *" avx512f "* ]] && isa=avx512
[[ $flags == *" avx512_bf16 "* ]] && isa=avx512bf16
[[ $flags == *" amx_bf16 "* ]] && isa=amx
DIR=${DIR:-benchmarks/results/cpu_${TAG:-$isa}}
[ -n "$SMOKE" ] && DIR=/tmp/fastsr-cpu-smoke
mkdir -p "$DIR"
TESTS="bf16 or winograd"; STEP_ARGS=(--rounds 4); BENCH_ARGS=()
if [ -n "$SMOKE" ]; then
  ROUNDS=1; SIZES="32"; BENCH_ROUNDS=1; TESTS="bf16_is_within"
  MODELS=(--models "NonBN x4 (fastsr nonbn_x4)" --skip-compile)
  STEP_ARGS=(--rounds 1 --batch-size 2 --crop 32); BENCH_ARGS=(--quick)
elif [ -n "$QUICK" ]; then
  ROUNDS=3; SIZES="128"; BENCH_ROUNDS=2
  MODELS=(--models "SRVGGNetCompact x4 (realesr-general-x4v3 size)" "MSRResNet x4" "NonBN x4 (fastsr nonbn_x4)")
else
  ROUNDS=5; SIZES="128 256"; BENCH_ROUNDS=3; MODELS=()
fi
step() {  # step NAME TIMEOUT_S COMMAND...: run, log, report the exit status, go on
  local name=$1 limit=$2; shift 2
  local t=$(date +%s)
  echo "== $name: $*"
  timeout "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - t )) s"
}
{
  echo "# Machine"
  echo
  lscpu | grep -E '^(Model name|Vendor ID|CPU\(s\)|Thread|Core|Socket|L2|L3)' | sed 's/^/    /'
  echo "    ISA flags: $(echo "$flags" | grep -o -w -E 'avx2|fma|avx512f|avx512_bf16|amx_bf16|amx_tile' | sort -u | tr '\n' ' ')"
  echo "    fastsr commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%F)"
  python - <<'EOF'
import torch
from fastsr.evaluate import resolve_precision
from fastsr.ops.winograd import winograd_preferred, winograd_supported
from fastsr.perf import native_bf16
print(f"    torch {torch.__version__}, ATen capability {torch.backends.cpu.get_cpu_capability()}, "
      f"{torch.get_num_threads()} threads")
print(f"    native bf16 {native_bf16('cpu')}; inference precision auto -> {resolve_precision('auto', 'cpu')}")
for dt in (torch.float32, torch.bfloat16):
    print(f"    Winograd {dt}: supported {winograd_supported(dt)}, preferred {winograd_preferred(dt)}")
EOF
} > "$DIR/machine.md" 2>&1
cat "$DIR/machine.md"
step parity 900 python -m pytest -q -p no:cacheprovider tests/test_inference.py tests/test_winograd.py \
  -k "$TESTS" 2>&1 | tail -15 | tee "$DIR/parity.log"
step inference 5400 python benchmarks/inference_cpu.py --threads 1 --rounds "$ROUNDS" --sizes $SIZES \
  "${MODELS[@]}" --out "$DIR/inference.md" 2>&1 | tail -80
step train_step 1200 python benchmarks/train_step_cpu.py --threads "$(nproc)" "${STEP_ARGS[@]}" 2>&1 \
  | tee "$DIR/train_step.md"
step iteration 3600 fastsr bench --device cpu --variants 2,8,9,10,11,12,13,14 --rounds "$BENCH_ROUNDS" \
  "${BENCH_ARGS[@]}" --no-inference --no-parity --out "$DIR" 2>&1 | tail -30
echo "results in $DIR"
