#!/usr/bin/env bash
# `make demo`: records the bundled demo service for 10 s and shows the result.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${DEMO_PYTHON:-/usr/bin/python3}
mkdir -p out
echo "demo: profiling demo/app.py ($("$python" --version 2>&1)) for 10 s at 100 Hz..."
build/conprof-agent record --duration 10 --rate 100 --output out/demo.svg --top 10 -- \
    "$python" demo/app.py
echo
echo "demo: flame graph written to $(pwd)/out/demo.svg (open it in a browser: hover, click to zoom, Ctrl-F to search)"
