#!/usr/bin/env bash
# package.sh [OUTDIR] — build bin/dnms (static, no cgo) and a .deb of it,
# its systemd unit, an example config and /etc/default/dnms into OUTDIR
# (default dist/). nfpm is a go tool dependency: nothing else to install.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
GO=${GO:-go}
v=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
# A release tag (v1.2.3) is the Debian version; anything else (a commit
# hash, "dev") sorts below every release.
if [[ $v =~ ^v?[0-9]+\.[0-9]+ ]]; then deb=${v#v}; else deb=0.0.0~git$v; fi
mkdir -p bin "$out"
CGO_ENABLED=0 $GO build -trimpath -ldflags "-X main.version=$v" -o bin/dnms ./cmd/dnms
VERSION=$deb GOARCH=$($GO env GOARCH) $GO tool nfpm package --config deploy/nfpm.yaml --packager deb --target "$out"
