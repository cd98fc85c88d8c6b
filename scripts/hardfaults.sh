#!/usr/bin/env bash
# Runs the hard-fault lab cases (a dead leaf→spine direction, then the link
# set down) N times back to back and prints one line per run and a count:
# how issue 14's pass rates were measured. Root; about 35 s a run.
#
#   sudo scripts/hardfaults.sh [N] [DIR]
#
# DIR (default: a temporary directory) keeps each run's log, and for a
# failed run the aggregator's and every agent's graph (DNMS_LAB_DUMP).
set -euo pipefail
n=${1:-20}
dir=${2:-$(mktemp -d)}
cd "$(dirname "$0")/.."
go test -c -o "$dir/dnms.test" ./cmd/dnms
cd cmd/dnms # the test builds dnms from here
pass=0
for i in $(seq 1 "$n"); do
	mkdir -p "$dir/run$i"
	if DNMS_LAB_DUMP="$dir/run$i" "$dir/dnms.test" -test.run 'TestLocalizeHardAndSlow/(dead-link|link-down)' \
		-test.v -test.timeout 10m >"$dir/run$i.log" 2>&1; then
		pass=$((pass + 1))
		res=pass
	else
		res=FAIL
	fi
	echo "run $i $res: $(grep -E 'only faulty|cleared:' "$dir/run$i.log" | sed 's/.*: //' | tr '\n' ';')"
done
echo "passed $pass of $n (logs in $dir)"
