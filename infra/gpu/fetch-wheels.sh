#!/usr/bin/env bash
# Wheels for the offline GPU machine, into .whl/ (git-ignored through .git/info/exclude).
#
# Run HERE (a machine that reaches the package registry), from anywhere in the checkout:
#   infra/gpu/fetch-wheels.sh
# then run infra/gpu/device-check.sh on the GPU machine with .whl carried along.
#
# The GPU image has Python 3.12 with torch (CUDA), tokenizers, safetensors, huggingface-hub,
# pyyaml, numpy, pyarrow and pytest, but no deepspeed, hjson or pydantic, and an older
# transformers than this project pins. Versions come from constraints.txt, so the device
# runs the same deepspeed/transformers/pydantic as the CPU suite (torch stays the image's).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.whl
mkdir -p "$dest"
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"

py312=(--only-binary=:all: --python-version 3.12 --implementation cp
       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps "${py312[@]}" -c constraints.txt -d "$dest" \
    pydantic pydantic-core annotated-types typing-inspection typing-extensions hjson transformers regex

# DeepSpeed publishes only a source archive. Without DS_BUILD_OPS it builds no kernels and
# its wheel is pure Python (ops are compiled just in time, and this project needs none:
# dsconfig uses torch's AdamW). Its setup.py imports torch: build it in the project's venv.
.venv/bin/pip wheel -q --no-deps --no-build-isolation -c constraints.txt -w "$dest" deepspeed

ls -l "$dest"
du -sh "$dest"
