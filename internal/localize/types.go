package localize

// Input is one route as the estimator sees it. Hops and Ports may alias the
// caller's slices: Run only reads them.
type Input struct {
	// Hops are node IDs, source host first, destination host last.
	Hops []string
	// Nodes is Hops numbered by the caller, for RunNumbered: Nodes[j]
	// indexes its names. Run ignores it; RunNumbered ignores Hops.
	Nodes []int32
	// Ports are the source ports of the route's keys. The reverse of key
	// (src, dst, port) is the route from dst to src with the same port.
	Ports []uint16
	// Samples probes were sent, Lost of them lost: LostForward before the
	// reflector counted them, LostReverse as acks; the rest of unknown
	// direction.
	Samples, Lost, LostForward, LostReverse int
	// Excess, when not nil, is parallel to Ports: each key's current
	// round-trip excess over its baseline in seconds (recent p50 −
	// long-window low percentile), negative or NaN when unknown. Per key, because the
	// keys of one route share its forward hops but not their reverse paths.
	Excess []float64
	// SamplesByKey and LostByKey, when not nil, are parallel to Ports: each
	// key's samples and lost samples. They say which round trips lost the
	// probes whose direction is unknown (no ack came back with the
	// reflector's counters), so those losses follow the reverse path of
	// each key instead of being spread over all of them.
	SamplesByKey, LostByKey []int
}

// hopCount is how many hops the route has, in either form.
func (r *Input) hopCount() int { return max(len(r.Hops), len(r.Nodes)) }

// Verdict is the estimator's call on one link.
type Verdict string

const (
	VerdictOK      Verdict = "ok"
	VerdictSuspect Verdict = "suspect" // weak evidence of loss
	VerdictFaulty  Verdict = "faulty"  // strong evidence of loss
	VerdictSlow    Verdict = "slow"    // adds delay, no loss verdict
)

// Row is one link's health: one row of /v1/graph/edges/health.
type Row struct {
	Src               string  `json:"src"`
	Dst               string  `json:"dst"`
	Suspicion         float64 `json:"suspicion"` // AvgLossThrough - AvgLossNotThrough
	AvgLossThrough    float64 `json:"avgLossThrough"`
	AvgLossNotThrough float64 `json:"avgLossNotThrough"`
	RoutesThrough     int     `json:"routesThrough"`
	SamplesThrough    int     `json:"samplesThrough"`
	RoutesNotThrough  int     `json:"routesNotThrough"`
	SamplesNotThrough int     `json:"samplesNotThrough"`
	// Explain-away estimator.
	EstimatedLoss float64 `json:"estimatedLoss"`
	Verdict       Verdict `json:"verdict"`
	Evidence      string  `json:"evidence,omitempty"`
	// LossPValue is the test's p-value that the link loses no more than
	// Config.NegligibleLoss (1 when there is nothing to test).
	LossPValue float64 `json:"lossPValue"`
	// DelayExcessSeconds is the delay seed score: mean RTT excess of the
	// routes through the link minus that of the routes not through it.
	DelayExcessSeconds float64 `json:"delayExcessSeconds"`
	// EstimatedDelaySeconds is the one-way delay the fit gives the link.
	EstimatedDelaySeconds float64 `json:"estimatedDelaySeconds"`
}

// Config tunes the estimator. A zero field means its default.
type Config struct {
	// Forgive is the L1 penalty of the selecting fit, in lost probes: a link
	// is selected only for the lost probes it explains beyond this many, so
	// a faulty link's loss is not smeared over its neighbours. Default 2.
	Forgive float64
	// Sweeps bounds the coordinate-descent passes of each fit. Default 200.
	Sweeps int
	// NegligibleLoss is the loss ratio a healthy link may have (the null
	// hypothesis of the test): background loss below it is never a
	// verdict. Default 0.0005 (0.05%).
	NegligibleLoss float64
	// FaultyFDR and SuspectFDR are the Benjamini–Hochberg false-discovery
	// rates of the faulty and suspect verdicts. Defaults 1e-4 and 0.01.
	FaultyFDR  float64
	SuspectFDR float64
	// MinExcess is how many lost probes beyond what the other links
	// explain any loss verdict needs. Default 3.
	MinExcess float64
	// SlowMinSeconds is the least estimated delay of a slow link. Default
	// 100 µs (see the README's slow-link table).
	SlowMinSeconds float64
	// SlowMinRoutes is how many routes with a delay observation a slow link
	// needs. Default 2.
	SlowMinRoutes int
	// DelayForgive is the L1 penalty of the delay fit, in seconds of excess
	// summed over routes. Default 20 µs: with the lab's jitter a 20 µs
	// delay on one link is then the top row by estimate in 19 of 20
	// trials, and 18 with 50 µs (BenchmarkSlowLinkLabJitter).
	DelayForgive float64
}

// DefaultConfig returns the estimator defaults.
func DefaultConfig() Config {
	return Config{
		Forgive:        2,
		Sweeps:         200,
		NegligibleLoss: 0.0005,
		FaultyFDR:      1e-4,
		SuspectFDR:     0.01,
		MinExcess:      3,
		SlowMinSeconds: 100e-6,
		SlowMinRoutes:  2,
		DelayForgive:   20e-6,
	}
}

// WithDefaults fills the zero fields of c with their defaults.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	def := func(v *float64, dv float64) {
		if *v <= 0 {
			*v = dv
		}
	}
	def(&c.Forgive, d.Forgive)
	def(&c.NegligibleLoss, d.NegligibleLoss)
	def(&c.FaultyFDR, d.FaultyFDR)
	def(&c.SuspectFDR, d.SuspectFDR)
	def(&c.MinExcess, d.MinExcess)
	def(&c.SlowMinSeconds, d.SlowMinSeconds)
	def(&c.DelayForgive, d.DelayForgive)
	if c.Sweeps <= 0 {
		c.Sweeps = d.Sweeps
	}
	if c.SlowMinRoutes <= 0 {
		c.SlowMinRoutes = d.SlowMinRoutes
	}
	return c
}
