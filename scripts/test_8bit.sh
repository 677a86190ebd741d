#!/usr/bin/env bash
# Run the 8-bit AdamW test (the t4 profile's optimizer) with bitsandbytes, which has a CPU backend since 0.45.
#
# bitsandbytes is not a dependency of the main environment (a 125 MB wheel, needed only with --use-8bit-adam),
# so it goes into its own folder (.cache/bitsandbytes, git-ignored) and only this test sees it.
# usage: bash scripts/test_8bit.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=.cache/bitsandbytes
PYTHON=${PYTHON:-.venv/bin/python}
start=$(date +%s)
if [ ! -d "$TARGET/bitsandbytes" ]; then
  echo "installing bitsandbytes into $TARGET"
  "$PYTHON" -m pip install --quiet --no-deps --target "$TARGET" "bitsandbytes==0.50.2"
fi
PYTHONPATH="$TARGET" "$PYTHON" -m pytest -q tests/test_train.py -k "8bit_adam_trains" -p no:cacheprovider "$@"
echo "scripts/test_8bit.sh took $(( $(date +%s) - start )) s"
