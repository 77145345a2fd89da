#!/usr/bin/env bash
# Warm runs with fresh workers against forked ones (parity/forkserver.py), interleaved in
# one window on a quiet machine (bench/forkserver.md):
#   bash bench/forkserver_ab.sh OUT_DIR [ROUNDS]
# On one warm cache: warm 15 variants (ONNX Runtime, Keras, LiteRT) and warm all CPU
# variants, each with PARITY_FORKSERVER=0 (a fresh interpreter per worker), the default
# `process` (servers of that parity process) and `shared` (servers left by an earlier
# run; one untimed run starts them). Every case a fresh process, timed by bench/warm_ab.py;
# CPU there counts the parity process tree, which a shared server's workers are not part of.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:?usage: bench/forkserver_ab.sh OUT_DIR [ROUNDS]}")
rounds=${2:-5}
mkdir -p "$out"
py=$PWD/.venv/bin/python
parity=$PWD/.venv/bin/parity
cache=$(mktemp -d /tmp/parity-fsab-XXXX)
servers=$(mktemp -d /tmp/parity-fsab-servers-XXXX)
trap '"$py" -c "import sys, pathlib; from parity.forkserver import stop_shared; stop_shared(pathlib.Path(sys.argv[1]))" "$servers"; rm -rf "$cache" "$servers"' EXIT
uptime > "$out/load.txt"
for set in fifteen all; do
  if [ $set = fifteen ]; then runtimes="-r onnxruntime -r keras -r litert"
  else runtimes="-r onnxruntime -r keras -r litert -r openvino -r torch_cpu"; fi
  run="PARITY_CACHE_DIR=$cache $parity run -q -m mobilenet_v2 $runtimes"
  eval "$run --json $out/cold_$set.json" > /dev/null || true  # the cache, then the servers
  eval "PARITY_FORKSERVER=shared PARITY_FORKSERVER_DIR=$servers $run" > /dev/null || true
  "$py" bench/warm_ab.py --rounds "$rounds" --out "$out/warm_$set.json" \
    --case "fresh=PARITY_FORKSERVER=0 $run --json $out/fresh_$set.json" \
    --case "process=$run --json $out/process_$set.json" \
    --case "shared=PARITY_FORKSERVER=shared PARITY_FORKSERVER_DIR=$servers $run --json $out/shared_$set.json" \
    | tee "$out/warm_$set.txt"
done
uptime >> "$out/load.txt"
