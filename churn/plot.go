package churn

import (
	"fmt"
	"io"
	"math"
)

// Table writes results as a Markdown table.
func Table(w io.Writer, rs []Result) error {
	if _, err := fmt.Fprintln(w, "| code | nodes | usable | segments lost / million / year | repair traffic / node / day | repairs (sample) | backlog at end |\n| --- | --- | --- | --- | --- | --- | --- |"); err != nil {
		return err
	}
	for _, r := range rs {
		c := r.Config
		if _, err := fmt.Fprintf(w, "| %d+%d | %d | %.1f%% | %s | %s | %d | %d |\n", c.K, c.M, c.Nodes, 100*r.Usable,
			lossText(r), bytesText(r.RepairPerNodeDay), r.Repairs, r.Backlog); err != nil {
			return err
		}
	}
	return nil
}

// lossText says "0 (< x)" when nothing was lost: the sample bounds what
// could be seen.
func lossText(r Result) string {
	if r.Lost == 0 {
		years := r.Config.Duration.Hours() / (365 * 24)
		return fmt.Sprintf("0 (< %.0f)", 1e6/float64(r.Config.Segments)/years)
	}
	return fmt.Sprintf("%.0f", r.LostPerMillion)
}

func bytesText(b float64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f GB", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.1f MB", b/1e6)
	default:
		return fmt.Sprintf("%.0f kB", b/1e3)
	}
}

// SVG writes a bar chart of the results: repair traffic per node per day
// (log scale) and segments lost per million per year, one bar per run.
func SVG(w io.Writer, title string, rs []Result) error {
	const (
		width, height = 820, 420
		left, top     = 70, 50
		plotH         = 250
	)
	barW := float64(width-left-20) / float64(max(len(rs), 1))
	maxT := 1.0
	for _, r := range rs {
		maxT = math.Max(maxT, r.RepairPerNodeDay)
	}
	logMax := math.Ceil(math.Log10(maxT))
	logMin := math.Max(logMax-6, 3) // 1 kB
	y := func(b float64) float64 {
		if b <= 0 {
			return top + plotH
		}
		f := (math.Log10(b) - logMin) / (logMax - logMin)
		return top + plotH*(1-math.Max(0, math.Min(1, f)))
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="24" font-size="15">%s</text>`+"\n", left, title)
	for e := logMin; e <= logMax; e++ {
		yy := y(math.Pow(10, e))
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, width-20, yy, yy)
		p(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, yy+4, bytesText(math.Pow(10, e)))
	}
	p(`<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">repair traffic per node per day</text>`+"\n", top+plotH/2, top+plotH/2)
	for i, r := range rs {
		x := float64(left) + float64(i)*barW + barW*0.15
		yy := y(r.RepairPerNodeDay)
		color := "#4a7ebb"
		if r.Lost > 0 {
			color = "#c0504d"
		}
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, yy, barW*0.7, float64(top+plotH)-yy, color)
		cx := x + barW*0.35
		p(`<text x="%.1f" y="%d" text-anchor="middle">%d+%d</text>`+"\n", cx, top+plotH+16, r.Config.K, r.Config.M)
		p(`<text x="%.1f" y="%d" text-anchor="middle">%d nodes</text>`+"\n", cx, top+plotH+31, r.Config.Nodes)
		p(`<text x="%.1f" y="%d" text-anchor="middle">lost %s</text>`+"\n", cx, top+plotH+46, lossText(r))
		p(`<text x="%.1f" y="%d" text-anchor="middle">usable %.0f%%</text>`+"\n", cx, top+plotH+61, 100*r.Usable)
	}
	p(`<text x="%d" y="%d" fill="#555">red: segments lost (per million per year); blue: none lost in the sample</text>`+"\n", left, height-12)
	_, err := fmt.Fprintln(w, "</svg>")
	return err
}
