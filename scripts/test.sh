#!/usr/bin/env bash
# test.sh — the whole test suite in two tiers.
#   1. unit tier: go test -race -short; pure logic, fakes, loopback. No root needed.
#   2. root tier: lab fabrics in network namespaces, real eBPF in the kernel,
#      real Prometheus, end-to-end agents. Runs only as root (CI is root).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

echo "== unit tier: go test -race -short ./..."
go test -race -short -count=1 -timeout 15m ./...

if [ "$(id -u)" -ne 0 ]; then
	echo "== root tier SKIPPED: lab and eBPF tests need root (run: sudo make test)"
	exit 0
fi
echo "== root tier: go test ./... (lab fabrics, eBPF, Prometheus, end to end)"
go test -count=1 -timeout 20m ./...
