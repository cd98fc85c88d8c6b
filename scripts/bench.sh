#!/usr/bin/env bash
# bench.sh — every benchmark table the project reports, one section each.
# Figures are ratios or distributions measured in this run; nothing here
# passes or fails on speed. Sections that need root say so and skip.
#   scripts/bench.sh                 all sections
#   scripts/bench.sh probe graph     only those
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

want() { [ $# -eq 0 ] || [[ " ${SECTIONS} " == *" $1 "* ]]; }
SECTIONS="${*:-probe ebpf graph localize mapper pinger api aggregator lab ui targets scale}"
root=$([ "$(id -u)" -eq 0 ] && echo yes || echo no)
section() { printf '\n=== %s\n' "$*"; }
gobench() { go test -run '^$' -count=1 "$@" 2>&1 | grep -vE '^(goos|goarch|pkg|cpu):'; }

if want probe; then
	section "probe: wire encode/decode, probes per second (userspace reflector, one process)"
	gobench -bench 'Encode|Decode|PingRate$' -benchmem ./internal/probe
	if [ "$root" = yes ]; then
		section "probe: probes per second, CPU and RSS of one agent against a peer reflecting in its kernel, agent pinned to CPU 1"
		tmp=$(mktemp -d)
		go test -c -o "$tmp/probe.test" ./internal/probe
		pin=(env DNMS_BENCH_AGENT_CPU=1 taskset -c 1)
		[ "$(nproc)" -ge 2 ] || pin=()
		(cd internal/probe && "${pin[@]}" "$tmp/probe.test" -test.run '^$' \
			-test.bench PingRateKernelReflector -test.benchtime 200000x 2>&1 | grep -vE '^(goos|goarch|pkg|cpu):')
		rm -rf "$tmp"
	fi
	if [ "$root" = yes ]; then
		section "probe: RTT error against an AF_PACKET capture, per time source, idle and under stress-ng --cpu 2"
		gobench -bench RTTError -benchtime 1x -v ./internal/probe | grep -vE '^\s*time='
	else
		section "probe: RTT error benchmark SKIPPED (needs root for the lab fabric)"
	fi
fi
if want ebpf; then
	if [ "$root" = yes ]; then
		section "ebpf: ns per packet in the TC programs (BPF_PROG_TEST_RUN), dnms vs other traffic"
		gobench -bench Programs ./internal/loader
	else
		section "ebpf: SKIPPED (needs root / CAP_BPF)"
	fi
fi
if want graph; then
	section "graph: localization on synthetic Clos fabrics (seed score vs estimator; precision@1, F1, compute time)"
	gobench -bench Localization -benchtime 1x -timeout 30m -v ./internal/graph | grep -vE '^=== RUN'
fi
if want localize; then
	section "localize: scenario tables (independent generator: gray loss, 5 faults, smallest delay per time source) and one run at 12k links / 340k routes"
	gobench -bench 'Scenarios|Run$' -benchtime 1x -timeout 60m -v ./internal/localize | grep -vE '^=== RUN'
	section "localize: the graph's health run (estimator input + estimator, CPU time) and a cached read, 12k links / 237k, ~300k and 591k routes"
	tmp=$(mktemp -d)
	DNMS_BENCH_SNAPSHOT="$tmp" gobench -bench 'Localization/time-10k' -benchtime 1x -timeout 30m ./internal/graph
	section "localize: reading that graph saved (320 MB), encoding/json (the decoder before) vs dnms health's streaming decoder, same bytes, same run (CPU time)"
	DNMS_BENCH_HEALTH_DOC="$tmp/10k-600k.json" gobench -bench HealthDecode -benchtime 1x -timeout 30m ./internal/api
	section "localize: dnms health -f end to end on both saved graphs (wall time, CPU, peak RSS)"
	go build -o "$tmp/dnms" ./cmd/dnms
	for doc in 10k 10k-300k 10k-600k; do
		if [ -x /usr/bin/time ]; then
			/usr/bin/time -f "health -f $doc: %e s wall, %U s user, %S s sys, %M KiB peak RSS" "$tmp/dnms" health -f "$tmp/$doc.json" -top 5 >/dev/null
		else
			TIMEFORMAT="health -f $doc: %R s wall, %U s user (install Debian time for peak RSS)"
			time "$tmp/dnms" health -f "$tmp/$doc.json" -top 5 >/dev/null
		fi
	done
	rm -rf "$tmp"
fi
if want mapper; then
	section "mapper: MDA coverage cost"
	gobench -bench 'Coverage|FlowsNeeded' ./internal/mapper
	if [ "$root" = yes ]; then
		section "mapper: paths found and probes sent, dnms vs scamper tracelb, on lab pairs"
		go run ./scripts/benchtrace
	fi
fi
if want pinger; then
	if [ "$root" = yes ]; then
		section "pinger: pings/s per agent on a lab fabric (6 hosts), every port vs one per (forward, reverse) route pair, same run"
		gobench -bench PingLoad -benchtime 1x ./cmd/dnms | grep -vE '^\s*time='
	else
		section "pinger: SKIPPED (needs root for the lab fabric)"
	fi
fi
if want api; then
	section "api: document sizes and times for 100 peers x 11 ports, SSE delivery rate"
	gobench -bench . -benchtime 100x ./internal/api
fi
if want aggregator; then
	section "aggregator: snapshot apply and SSE parse"
	gobench -bench . ./internal/aggregator
fi
if want lab; then
	if [ "$root" = yes ]; then
		section "lab: fabric build time and delay element precision"
		gobench -bench 'Build|DelayElement' -benchtime 5x ./internal/lab
	else
		section "lab: SKIPPED (needs root)"
	fi
fi
if want ui; then
	if [ "$root" = yes ] && command -v chromium >/dev/null; then
		section "ui: first paint of the page for 100 hosts (9,900 routes) and heatmap redraw of 1,000 x 1,000 pairs, in headless Chromium (Performance API)"
		gobench -bench 'FirstPaint|HeatmapRedraw' -benchtime 5x ./internal/ui
	else
		section "ui: SKIPPED (needs root and chromium; scripts/deps.sh bench installs it)"
	fi
fi
if want targets; then
	if [ "$root" = yes ]; then
		section "targets: one agent probing 1,000 external targets on a lab host (probes/s, CPU, RSS over an empty targets file)"
		gobench -bench Targets1000 -benchtime 1x ./internal/targets
		section "targets: RTT error against an AF_PACKET capture per probe kind and time source"
		gobench -bench TargetRTTError -benchtime 1x ./internal/targets
	else
		section "targets: SKIPPED (needs root: raw sockets and a lab fabric)"
	fi
fi
if want scale; then
	section "scale: emulated clusters of 100, 300 and 1000 agents on a simulated Clos (plan, mapper, pinger, graph, API, aggregator merge; README scale section)"
	go run ./scripts/scale -n "${DNMS_SCALE_SIZES:-100,300,1000}" -liveMax 0
	section "scale: gossip transport, bytes and allocations per received 300-byte packet: memberlist's NetTransport (baseline) vs internal/cluster's"
	gobench -bench TransportReceive -benchmem -benchtime 20000x ./internal/cluster
	section "scale: ${DNMS_SCALE_LIVE:-300} live agents in one process (memberlist, HTTP/SSE, plan, mapper, pinger, a0 aggregating; emulation-only -gossipScale 10 -livePingInterval 60s -liveCompress=false, GOGC=200; README Live agents; DNMS_SCALE_LIVE_FLAGS adds flags)"
	# shellcheck disable=SC2086 # DNMS_SCALE_LIVE_FLAGS is a list of flags
	GOGC=${GOGC:-200} go run ./scripts/scale -n "${DNMS_SCALE_LIVE:-300}" -agents 0 -trials 0 -liveMax "${DNMS_SCALE_LIVE:-300}" -liveFor 150s \
		-gossipScale 10 -livePingInterval 60s -liveCompress=false ${DNMS_SCALE_LIVE_FLAGS:-}
fi
