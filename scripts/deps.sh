#!/usr/bin/env bash
# deps.sh PURPOSE — make sure the Debian packages PURPOSE needs are installed.
# As root it installs what is missing; otherwise it names it and fails.
# PURPOSE: test | bench | demo | generate
set -euo pipefail

common=(iproute2 nftables ethtool iputils-ping procps)
case "${1:-test}" in
test)     pkgs=("${common[@]}" traceroute tcpdump prometheus systemd util-linux chromium) ;;
bench)    pkgs=("${common[@]}" traceroute tcpdump stress-ng scamper chromium) ;;
demo)     pkgs=("${common[@]}" curl) ;;
generate) pkgs=(clang llvm libbpf-dev gcc-multilib bpftool) ;;
*) echo "usage: $0 test|bench|demo|generate" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "missing Debian packages: ${missing[*]}" >&2
	echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
