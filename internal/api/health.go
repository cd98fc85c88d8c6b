package api

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/dnms/dnms/internal/graph"
	"github.com/dnms/dnms/internal/localize"
)

// maxHealthInput bounds what `dnms health` reads (a saved graph of a large
// fabric is tens of MB).
const maxHealthInput = 512 << 20

// RunHealth implements `dnms health -f FILE|- [-o text|json] [-top N]`: it
// reads a saved /v1/graph or /v1/aggregator/graph document (a
// graph.Snapshot), checks it as graph.Validate does and runs the estimator (the code behind
// /v1/graph/edges/health) and prints the rows, most suspicious first, as an
// aligned table or as the same JSON the API serves. args excludes the
// command name. A malformed or inconsistent document is an error; -h returns
// flag.ErrHelp after printing usage to stderr.
func RunHealth(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dnms health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "saved /v1/graph or /v1/aggregator/graph JSON document (- for stdin)")
	format := fs.String("o", "text", "output format: text or json")
	top := fs.Int("top", 0, "print only the first N links (0: all)")
	order := fs.String("sort", "suspicion", "row order: suspicion (seed score) or estimate (verdict, then estimated loss and delay)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: dnms health -f FILE|- [-o text|json] [-top N] [-sort suspicion|estimate]\n\n"+
			"Ranks the links of a saved graph (curl .../v1/graph > FILE) by fault likelihood,\n"+
			"with the same code as /v1/graph/edges/health.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("health: unexpected argument %q (the file goes after -f)", fs.Arg(0))
	}
	if *file == "" {
		return errors.New("health: -f FILE is required (- reads stdin)")
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("health: -o %q: want text or json", *format)
	}
	if *order != "suspicion" && *order != "estimate" {
		return fmt.Errorf("health: -sort %q: want suspicion or estimate", *order)
	}
	if *top < 0 {
		return fmt.Errorf("health: -top %d: want 0 (all) or more", *top)
	}

	name := *file
	var in io.Reader
	if name == "-" {
		name = "stdin"
		if stdin == nil {
			return errors.New("health: -f - but no standard input")
		}
		in = stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("health: %w", err)
		}
		defer f.Close()
		in = f
	}
	doc, err := readHealthDoc(in)
	if err != nil {
		return fmt.Errorf("health: %s: %w", name, err)
	}
	if doc.invalid != nil {
		return fmt.Errorf("health: %s: inconsistent graph: %w", name, doc.invalid)
	}
	rows := doc.input.Run(graph.DefaultHealthConfig())
	if *order == "estimate" {
		localize.SortByEstimate(rows)
	}
	all := rows
	if *top > 0 && len(rows) > *top {
		rows = rows[:*top]
	}
	if *format == "json" {
		b, err := json.MarshalIndent(orEmpty(rows), "", "  ")
		if err != nil {
			return fmt.Errorf("health: encode: %w", err)
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	return writeHealthText(stdout, doc, all, rows)
}

// writeHealthText prints the summary over all rows and the table of shown.
func writeHealthText(w io.Writer, doc healthDoc, all, rows []graph.LinkHealth) error {
	var faulty, suspect, slow int
	for _, r := range all {
		switch r.Verdict {
		case graph.VerdictFaulty:
			faulty++
		case graph.VerdictSuspect:
			suspect++
		case graph.VerdictSlow:
			slow++
		}
	}
	fmt.Fprintf(w, "graph at event %d: %d nodes, %d links, %d routes; %d faulty, %d suspect, %d slow (showing %d)\n\n",
		doc.eventID, doc.nodes, doc.links, doc.routes, faulty, suspect, slow, len(rows))
	// Numbers align right; the link column is padded by hand to read left.
	lw := len("LINK")
	for _, r := range rows {
		lw = max(lw, len(r.Src)+len(" -> ")+len(r.Dst))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "RANK\t%-*s\tSUSPICION\tLOSS THROUGH\tLOSS NOT THROUGH\tROUTES/SAMPLES THROUGH\tEST. LOSS\tDELAY EXCESS\tEST. DELAY\tVERDICT\t\n", lw, "LINK")
	for i, r := range rows {
		fmt.Fprintf(tw, "%d\t%-*s\t%+.2f%%\t%.2f%%\t%.2f%%\t%d/%d\t%.2f%%\t%+.0fµs\t%.0fµs\t%s\t\n",
			i+1, lw, r.Src+" -> "+r.Dst, 100*r.Suspicion, 100*r.AvgLossThrough, 100*r.AvgLossNotThrough,
			r.RoutesThrough, r.SamplesThrough, 100*r.EstimatedLoss,
			1e6*r.DelayExcessSeconds, 1e6*r.EstimatedDelaySeconds, verdictText(r.Verdict))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Evidence lines for the rows the estimator flagged.
	var ev strings.Builder
	for i, r := range rows {
		if r.Verdict != graph.VerdictOK && r.Verdict != "" && r.Evidence != "" {
			fmt.Fprintf(&ev, "  #%d %s -> %s: %s\n", i+1, r.Src, r.Dst, r.Evidence)
		}
	}
	if ev.Len() > 0 {
		fmt.Fprintf(w, "\nevidence:\n%s", ev.String())
	}
	return nil
}

func verdictText(v graph.Verdict) string {
	if v == "" {
		return "-"
	}
	return string(v)
}
