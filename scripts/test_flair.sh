#!/usr/bin/env bash
# Run the flair adapter tests (tests/flair) in their own virtual environment, .venv-flair.
#
# Why a second venv: flair 0.15 requires transformers<5, which drags huggingface-hub back to 0.x, and
# with those diffusers 0.42 no longer imports. The main .venv keeps diffusers/transformers 5; this one
# holds torch (the local CPU wheel), flair, pytest and our package installed without its dependencies
# (tokencompose.nouns imports neither diffusers nor transformers).
#
# usage: bash scripts/test_flair.sh [extra pytest args]
# The install is skipped when .venv-flair already has flair, pytest, nltk, textblob-aptagger and tokencompose.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-flair
PYTHON="$VENV/bin/python"
start=$(date +%s)

if [ ! -x "$PYTHON" ]; then
  echo "creating $VENV"
  python3 -m venv "$VENV"
fi

# (checked by distribution metadata: importing flair alone takes several seconds)
if "$PYTHON" -c "from importlib.metadata import version
for dist in ('flair', 'pytest', 'nltk', 'textblob-aptagger', 'tokencompose'): version(dist)" 2>/dev/null; then
  echo "$VENV already has flair: skipping the install"
else
  echo "installing into $VENV (torch CPU wheel first, so flair does not pull a CUDA build)"
  "$PYTHON" -m pip install --quiet torch==2.13.0
  "$PYTHON" -m pip install --quiet "flair==0.15.1" pytest
  # runtime dependencies of tokencompose.nouns (the offline perceptron tagger), then the package itself
  "$PYTHON" -m pip install --quiet nltk textblob-aptagger
  "$PYTHON" -m pip install --quiet --no-deps -e .
fi
echo "setup took $(( $(date +%s) - start )) s"

"$PYTHON" -m pytest tests/flair "$@"
echo "scripts/test_flair.sh took $(( $(date +%s) - start )) s"
