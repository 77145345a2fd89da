#!/usr/bin/env bash
# Issue 24's figures in one window on a quiet machine (bench/speed2_quiet.md):
#   bash bench/speed2_quiet.sh OUT_DIR [POLYGRAPHY_DIR]
# cold all CPU variants (a fresh cache), then, on that warm cache, warm `-r ort_dynamo`
# against Polygraphy's mark-all run on the same 16 preprocessed images (5 rounds
# interleaved), and warm 15 variants (ONNX Runtime, Keras, LiteRT) against warm all CPU
# variants (3 rounds interleaved); a second cold run last. Every case a fresh process,
# timed by bench/warm_ab.py. POLYGRAPHY_DIR: `pip install --target DIR --no-deps
# polygraphy` (Polygraphy is not a dependency of parity; it runs on our onnx/onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:?usage: bench/speed2_quiet.sh OUT_DIR [POLYGRAPHY_DIR]}")
polygraphy=${2:-}
mkdir -p "$out"
py=$PWD/.venv/bin/python
parity=$PWD/.venv/bin/parity
all="-r onnxruntime -r keras -r litert -r openvino -r torch_cpu"
fifteen="-r onnxruntime -r keras -r litert"
cache=$(mktemp -d /tmp/parity-speed2-XXXX)
trap 'rm -rf "$cache" "$cache".fresh' EXIT
uptime > "$out/load.txt"

"$py" bench/warm_ab.py --rounds 1 --out "$out/cold.json" \
  --case "cold_all=PARITY_CACHE_DIR=$cache $parity run -q -m mobilenet_v2 $all --json $out/cold_all.json"

onnx=$(ls -t "$cache"/artifacts/mobilenet_v2/onnx_dynamo-*/model.onnx | head -1)
PARITY_CACHE_DIR=$cache "$py" - "$out/batch.npy" <<'EOF'
import sys
import numpy as np
from parity.harness import RunConfig, Session
np.save(sys.argv[1], Session(RunConfig(model="mobilenet_v2")).batch)
EOF
printf 'import numpy as np\n\ndef load_data():\n    yield {"input": np.load("%s")}\n' \
  "$out/batch.npy" > "$out/loader.py"

cases=(--case "parity=PARITY_CACHE_DIR=$cache $parity run -q --summary -m mobilenet_v2 -r ort_dynamo --json $out/ort_dynamo.json")
if [ -n "$polygraphy" ]; then
  cases=(--case "polygraphy=PYTHONPATH=$polygraphy $py $polygraphy/bin/polygraphy run $onnx --onnxrt --onnx-outputs mark all --data-loader-script $out/loader.py" "${cases[@]}")
fi
cases+=(--case "polygraphy_equivalent=$py bench/polygraphy_equivalent.py $onnx $out/batch.npy")
"$py" bench/warm_ab.py --rounds 5 --out "$out/warm_ort.json" "${cases[@]}"

"$py" bench/warm_ab.py --rounds 3 --out "$out/warm_all.json" \
  --case "warm15=PARITY_CACHE_DIR=$cache $parity run -q -m mobilenet_v2 $fifteen --json $out/warm15.json" \
  --case "warm_all=PARITY_CACHE_DIR=$cache $parity run -q -m mobilenet_v2 $all --json $out/warm_all_report.json"

mkdir -p "$cache".fresh
"$py" bench/warm_ab.py --rounds 1 --out "$out/cold2.json" \
  --case "cold_all_again=PARITY_CACHE_DIR=$cache.fresh $parity run -q -m mobilenet_v2 $all"
uptime >> "$out/load.txt"
