#!/bin/bash
# GPU check of fastsr's CUDA kernels on a machine with an NVIDIA GPU and a CUDA build of torch.
# From the project root:  bash benchmarks/gpu/run.sh [--smoke]
# Builds fastsr._C with the CUDA kernels in place, then runs cuda_checks.py (check.py's sections:
# parity of every op vs impl="reference", opcheck, kernel timings vs eager / torch.compile, the GAN
# iteration variants, inference; plus call overhead, fp64 gradcheck on the device and
# torch.compile(fullgraph=True) of every fused generator). QUICK=1 runs parity, call overhead and
# the kernel table only (~40 s on an H200 after the ~45 s build). Results: $OUT/gpu.json.
# GRAPHS=1 then runs the CUDA tests of tests/test_graphs.py (graph replay == eager) and
# graph_check.py (GAN iteration A-E and inference with CUDA graphs; ~2 min on an H200).
# --smoke runs tiny shapes on the CPU to test the scripts themselves.
set -o pipefail
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"; export OUT
if [ "$1" != "--smoke" ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv,noheader
  export FASTSR_CUDA=1
fi
t=$(date +%s)
if [ -z "$SKIP_BUILD" ]; then
  python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { grep -A8 -m6 "error" "$OUT/build.log" | head -80; exit 1; }
fi
echo "build $(( $(date +%s) - t ))s"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# Packages the GPU machine lacks (it has no network) travel as wheels in .whl/ (git-ignored;
# name it in the device tool's carry): pytorch-msssim for the SSIM baseline. Fetch them here:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl pytorch-msssim==1.0.0
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fastsr-site \
    .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/fastsr-site
fi
timeout "${CHECK_S:-480}" python3 "$HERE/cuda_checks.py" "$@" 2>&1 | tee "$OUT/check.log"
if [ -n "$GRAPHS" ] && [ "$1" != "--smoke" ]; then
  timeout "${GRAPH_S:-300}" python3 -m pytest -q -x -p no:cacheprovider tests/test_graphs.py -k "cuda or graphed" \
    2>&1 | tail -15 | tee "$OUT/graph_tests.log"
  timeout "${GRAPH_S:-300}" python3 "$HERE/graph_check.py" 2>&1 | tee "$OUT/graph_check.log"
fi
