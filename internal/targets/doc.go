// Package targets probes external targets — hosts that run no dnms, such as
// gateways, VIPs, load balancers, DNS and database servers — listed in a
// YAML file (-targets): ICMP echo, TCP SYN (half-open, reset by the kernel)
// and UDP (any answer or port unreachable), several flows per target so
// ECMP paths show, through internal/probe's TargetProber. It owns the file
// (parse, validate, resolve, reload on SIGHUP and on change; a bad file is
// rejected whole with one file:line error and the previous set keeps
// running), the per-target statistics served at /v1/targets, the
// dnms_target_* metrics and, for targets with trace: true, the traceroutes
// whose hop lists feed internal/pathwatch.
//
// Example file:
//
//	defaults: {interval: 1s, timeout: 1s}
//	targets:
//	  - {name: gw, host: 198.18.1.0, probe: icmp}
//	  - {name: web, host: 198.18.2.1, port: 8080, probe: tcp}
//	  - {name: dns, host: 198.18.3.1, port: 53, probe: udp, trace: true, interval: 5s}
//
// Keys (per target; those marked * also in defaults): name, host (an IP or
// a name, resolved at each reload and every resolve interval; every address
// is probed and labelled), port (tcp, udp), probe (icmp, tcp, udp),
// interval* (1s), timeout* (1s, ≤ interval), flows* (1..16, default 1),
// trace* (false), traceInterval* (10s), resolve* (1m).
package targets
