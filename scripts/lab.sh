#!/bin/sh
# Thin wrapper: scripts/lab.sh up|down|truth|list|fault ... (needs root).
set -eu
cd "$(dirname "$0")/.."
exec go run ./scripts/lab "$@"
