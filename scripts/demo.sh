#!/usr/bin/env bash
# demo.sh — the README's main job: see scripts/demo/main.go. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
exec go run ./scripts/demo -bin bin/dnms "$@"
