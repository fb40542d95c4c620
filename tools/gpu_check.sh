#!/usr/bin/env bash
# The GPU checks in one go, for a machine with an NVIDIA GPU and torch 2.11.0 (+cu130) in Python:
#
#   tools/gpu_check.sh            build (when cargo is there), then
#     1. the pipeline parity cases on cuda (fp32) against diffusers' CPU references,
#     2. fp16 and bf16 generations on cuda with the tiny fixtures (finite, right size),
#     3. the timing: `letterpress bench pipeline --device cuda --dtype fp16` (ours vs diffusers,
#        SD 1.5 configurations with random weights, 20 DDIM steps) at 256 and 512.
#
# Without cargo it uses binaries built elsewhere (same libtorch ABI): target/release/letterpress
# and target/release/deps/pipeline_parity-*. Everything it prints is also in out/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
exec > >(tee out/gpu_check.log) 2>&1

py=${PYTHON:-python3}
[ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null && py=.venv/bin/python
echo "== machine"
nvidia-smi -L || echo "nvidia-smi: not found"
"$py" - <<'PY' || { echo "gpu_check: $py has no usable torch"; exit 1; }
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
assert torch.__version__.startswith("2.11.0"), "tch 0.24.0 needs torch 2.11.0 exactly"
PY
LIBTORCH=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export LIBTORCH
# libtorch_cuda needs the CUDA runtime libraries of the nvidia-* wheels next to torch.
site=$(dirname "$LIBTORCH")
nvlibs=$(find "$site/nvidia" -maxdepth 3 -name lib -type d 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$LIBTORCH/lib:${nvlibs}${LD_LIBRARY_PATH:-}"

status=0
step() { echo; echo "== $*"; }

if command -v cargo >/dev/null; then
  step "build (release)"
  cargo build --release --quiet || exit 1
  cargo test --release --no-run -p letterpress-diffusion --test pipeline_parity 2>&1 | tail -1 || exit 1
fi
bin=target/release/letterpress
parity=$(ls -t target/release/deps/pipeline_parity-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -x "$bin" ] || { echo "gpu_check: no $bin (no cargo here and none carried)"; exit 1; }

step "1. pipeline parity on cuda (fp32; tolerance 1e-2 there, TF32 convolutions)"
if [ -n "$parity" ]; then
  # The test binary finds its fixtures through CARGO_MANIFEST_DIR (read at run time first).
  (cd diffusion && CARGO_MANIFEST_DIR="$PWD" LETTERPRESS_TEST_DEVICE=cuda "../$parity" --test-threads=1 --nocapture 2>&1 |
    grep -E '^parity|^test |panicked|test result') || status=1
else
  echo "no pipeline_parity test binary"; status=1
fi

step "2. fp16 / bf16 generations on cuda (tiny fixture)"
for dtype in fp16 bf16; do
  "$bin" generate --model-dir diffusion/tests/fixtures/pipeline/sd1-controlnet --prompt "a poster that says 'SALE'" \
    --width 256 --height 256 --steps 4 --seed 1 --device cuda --dtype "$dtype" -o "out/gpu-$dtype.png" || status=1
done
"$py" - <<'PY' || status=1
from PIL import Image
import numpy as np
for d in ("fp16", "bf16"):
    a = np.asarray(Image.open(f"out/gpu-{d}.png"))
    print(d, a.shape, "mean", a.mean().round(2), "std", a.std().round(2))
    assert a.shape == (256, 256, 3) and a.std() > 0
PY

step "3. timing: ours vs diffusers on cuda, fp16, 20 DDIM steps"
if "$py" -c 'import diffusers, transformers' 2>/dev/null; then
  "$bin" bench pipeline --device cuda --dtype fp16 --runs 3 --size 256 --python "$py" || status=1
  "$bin" bench pipeline --device cuda --dtype fp16 --runs 3 --size 512 --python "$py" || status=1
else
  echo "diffusers is not installed for $py: pip install diffusers transformers accelerate"; status=1
fi

step "done: status $status"
exit $status
