package main

// healthMeta is what an agent adds to /healthz. docs/api.md documents every
// field; TestHealthzMatchesDocs keeps the two in step.
type healthMeta struct {
	Version    string     `json:"version"`
	Role       string     `json:"role"`
	Node       string     `json:"node"`
	TimeSource string     `json:"timeSource"` // ebpf, kernel or user
	EBPF       ebpfHealth `json:"ebpf"`
	ProbeCaps  capsHealth `json:"probeCaps"`
}

// capsHealth says whether the probe budget's caps set the pace
// (-probeRate, -traceRate, -traceRouterRate) in the last minute, and how
// many probes they held back since start.
type capsHealth struct {
	PingsStretched        bool  `json:"pingsStretched"`
	PingsHeld             int64 `json:"pingsHeld"`
	TracesStretched       bool  `json:"tracesStretched"`
	TracesHeld            int64 `json:"tracesHeld"`
	RouterBudgetStretched bool  `json:"routerBudgetStretched"`
}

// ebpfHealth says whether the TC programs are attached, how and where, and
// why not when they are not.
type ebpfHealth struct {
	Attached  bool     `json:"attached"`
	Mode      string   `json:"mode"`      // tcx or clsact; "" when not attached
	Ifaces    []string `json:"ifaces"`    // interfaces the programs are attached to
	Reflector bool     `json:"reflector"` // pings answered in the kernel
	Error     string   `json:"error"`     // why eBPF is off; "" when attached or not asked for
}
