#!/bin/sh
# The source tree keeps its layers (docs/architecture.md): includes point down, no loops.
# DFM_OBJ_DIR (set by make check) adds the check for call loops between the built objects.
cd "$(dirname "$0")/.." || exit 1
exec sh tools/src-layers.sh src ${DFM_OBJ_DIR:-}
