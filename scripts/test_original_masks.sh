#!/usr/bin/env bash
# Run the tests of masks_original (the authors' Grounded-SAM packages) in their own venv, .venv-original.
#
# Why a second venv: groundingdino-py and segment-anything(-hq) need torchvision, and the main .venv keeps
# torch 2.13.0 without it. This one holds torch 2.14.1 + torchvision 0.29.1 (a pair that import together),
# groundingdino-py 0.4.0 (pure Python: its setup.py builds no C++/CUDA extension, and its multi-scale deformable
# attention is always the PyTorch path, multi_scale_deformable_attn_pytorch), segment-anything 1.0,
# segment-anything-hq 0.3 (the authors' SAM-HQ), pytest, and our package installed without its dependencies
# (masks_original and prepare need numpy, Pillow and tqdm, which come with the packages above).
# transformers<5: groundingdino-py's BertModelWarper calls get_extended_attention_mask and get_head_mask of
# BertModel, which transformers 5 removed
# (groundingdino-py asks for transformers without a bound, so pip would take 5.x and the model would not build).
#
# usage: bash scripts/test_original_masks.sh [extra pytest args]
# Time (2 CPU cores, measured 2026-12-01): 163 s from nothing (setup 133 s, with the torch 2.14.1 CUDA wheel and
# its nvidia-* wheels read from this machine's local index; the venv takes 5.9 GB), 16 s once .venv-original
# exists (9 tests in 13 s).
# The install is skipped when .venv-original already has every package below.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-original
PYTHON="$VENV/bin/python"
start=$(date +%s)

if [ ! -x "$PYTHON" ]; then
  echo "creating $VENV"
  python3 -m venv "$VENV"
fi

if "$PYTHON" -c "from importlib.metadata import version
for dist in ('torch', 'torchvision', 'groundingdino-py', 'segment-anything', 'segment-anything-hq', 'pytest',
             'tokencompose'): version(dist)
assert int(version('transformers').split('.')[0]) < 5" 2>/dev/null; then
  echo "$VENV already has the original packages: skipping the install"
else
  echo "installing into $VENV"
  "$PYTHON" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
  "$PYTHON" -m pip install --quiet groundingdino-py==0.4.0 segment-anything==1.0 segment-anything-hq==0.3 \
    "transformers<5" pytest
  "$PYTHON" -m pip install --quiet --no-deps -e .
fi
echo "setup took $(( $(date +%s) - start )) s"

OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$PYTHON" -m pytest tests/original "$@"
echo "scripts/test_original_masks.sh took $(( $(date +%s) - start )) s"
