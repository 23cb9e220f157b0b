#!/usr/bin/env bash
# The CUDA path's checks (issue #9) in one run, for a session that has a GPU for a few minutes.
#
#     OUT=/some/dir bash benchmarks/gpu_check.sh        # output in $OUT, else ./gpu-check-out
#
# In order of importance, each step cut short so that the whole run ends within DEADLINE_S (480 s):
#   1. nvidia-smi and what torch sees;
#   2. the GPU tests (tests/test_devices.py: bf16 GPU against fp32 CPU, R-CNN scores, memory estimate vs peak);
#   3. `wsimito bench --device cuda --json` on a 20000 px synthetic slide (what `--size 20000` writes), with the
#      paper's default widths and random weights (benchmarks/random_bundle.py; speed does not depend on weights);
#   4. the same bundle's `bench --quick` on CPU, for comparison;
#   5. on an 8192 px slide, the GPU default against WSIMITO_PRECISION=fp32, 16 reading threads, WSIMITO_COMPILE=1.
# On an H100 this should take 6-8 minutes (an estimate from CPU runs: not yet run on one). Each bench writes
# bench-NAME.json; summary.txt has the numbers side by side; everything printed is in gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # run this checkout, whatever is installed
DEADLINE_S=480
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

step() {  # step NAME MAX_SECONDS 'COMMAND': run COMMAND for at most MAX_SECONDS and what is left of DEADLINE_S
    local name=$1 left=$((DEADLINE_S - SECONDS))
    local limit=$(($2 < left ? $2 : left))
    if ((limit < 20)); then echo "=== $name: skipped, out of time"; return 1; fi
    echo "=== $name (at ${SECONDS}s, at most ${limit}s): $3"
    timeout -k 10 "$limit" bash -c "$3"
    echo "=== $name: exit $? at ${SECONDS}s"
}

bench() {  # bench NAME DEVICE BUNDLE ARGS...: one `wsimito bench --json` into bench-NAME.json
    local name=$1 device=$2 bundle=$3
    shift 3
    python -m wsimito bench --device "$device" --model "$bundle" --json "$@" > "$OUT/bench-$name.json"
}
export -f bench
export OUT

echo "=== $(date -u +%FT%TZ) wsimito $(git rev-parse --short HEAD 2>/dev/null)" \
     "$(git diff --quiet 2>/dev/null || echo 'with uncommitted changes')"
nvidia-smi
# Each dependency imported alone, with a time limit: a session's first GPU run hung before this script's first step.
for module in numpy torch cv2 yaml dask distributed zarr tifffile tiffslide openslide pywt sklearn scipy wsimito; do
    echo "--- import $module"
    timeout -k 5 60 python -c "import $module" || { echo "=== import $module failed or hung: stopping"; exit 1; }
done
python - <<'EOF' || exit 1
import torch
assert torch.cuda.is_available(), "torch sees no CUDA GPU: nothing to check here"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"{torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}, "
      f"free/total GiB {[round(b / 2**30, 1) for b in torch.cuda.mem_get_info()]}")
EOF

step "GPU tests" 150 "python -m pytest tests/test_devices.py -v -s -rs -p no:cacheprovider"
step "random bundles" 90 "python benchmarks/random_bundle.py $SCRATCH/gpu-model --device cuda &&
                          python benchmarks/random_bundle.py $SCRATCH/cpu-model --device cpu"
step "20000 px slide" 150 "python -m wsimito synth $SCRATCH/s20000 --fields 0 --slide 20000"
step "bench cuda 20000" 150 "bench cuda-20000 cuda $SCRATCH/gpu-model --slide $SCRATCH/s20000/synthetic.tiff"
step "bench cpu quick" 150 "bench cpu-quick cpu $SCRATCH/cpu-model --quick"
step "8192 px slide" 60 "python -m wsimito synth $SCRATCH/s8192 --fields 0 --slide 8192"
on_8192="cuda $SCRATCH/gpu-model --slide $SCRATCH/s8192/synthetic.tiff"
step "bench cuda 8192" 60 "bench cuda-8192 $on_8192"
step "bench cuda 8192 fp32" 60 "WSIMITO_PRECISION=fp32 bench cuda-8192-fp32 $on_8192"
step "bench cuda 8192 16 readers" 60 "bench cuda-8192-workers16 $on_8192 --workers 16"
step "bench cuda 8192 compiled" 180 "WSIMITO_COMPILE=1 bench cuda-8192-compile $on_8192"

python - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, pathlib, sys
keys = ["device", "tiles", "batch_size", "precision", "compile", "workers", "model_tiles_per_s", "read_mpx_per_s",
        "pipeline_tiles_per_s", "efficiency", "peak_gpu_mb", "peak_rss_mb"]
print("run".ljust(22) + "".join(k[:14].rjust(16) for k in keys))
for path in sorted(pathlib.Path(sys.argv[1]).glob("bench-*.json")):
    text = path.read_text().strip()
    row = json.loads(text.splitlines()[-1]) if text else {}
    cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in (row.get(k, "-") for k in keys)]
    print(path.stem[6:].ljust(22) + "".join(c.rjust(16) for c in cells))
EOF
