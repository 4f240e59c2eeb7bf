#!/bin/sh
# The sources keep the hygiene rules (tools/src-hygiene.sh): no abort/assert/exit/print, no
# allocation outside dfm_allocator, no function longer than 80 lines.
cd "$(dirname "$0")/.." || exit 1
exec sh tools/src-hygiene.sh src
