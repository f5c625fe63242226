package cli

import (
	"fmt"
	"io"
	"strings"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/cli/output"
)

// smiColumn is one column of an smi table. The header cell is drawn at
// min width exactly as SPEC A1 shows it; wider columns grow evenly.
type smiColumn struct {
	header     string // the header cell at min width, padding included
	min        int
	rightAlign bool
	growPad    int // padding counted when content decides the width
}

// The accelerator table's columns, as the seed manual draws them.
var deviceColumns = []smiColumn{
	{header: "  Device  ", min: 10, rightAlign: true, growPad: 4},
	{header: "        Name         ", min: 21, growPad: 3},
	{header: "            Token           ", min: 28, growPad: 4},
	{header: "     Model    ", min: 14, growPad: 4},
	{header: "  Memory Usage  ", min: 16, growPad: 4},
	{header: "  Total Memory  ", min: 16, growPad: 4},
}

// The process table's columns: sized to content, headers centred.
var processColumns = []smiColumn{
	{header: "Device", rightAlign: true, growPad: 4},
	{header: "Job ID", rightAlign: true, growPad: 4},
	{header: "PID", rightAlign: true, growPad: 4},
	{header: "Process", growPad: 4},
	{header: "Memory Usage", growPad: 4},
}

func width(s string) int { return output.Width(s) }

// layout returns each column's width for the rows.
func layout(cols []smiColumn, rows [][]string) []int {
	w := make([]int, len(cols))
	for i, c := range cols {
		w[i] = c.min
		if c.min == 0 {
			w[i] = width(c.header) + 4
		}
		for _, r := range rows {
			if n := width(r[i]) + c.growPad; n > w[i] {
				w[i] = n
			}
		}
	}
	return w
}

func headerCell(c smiColumn, w int) string {
	if c.min > 0 {
		grow := w - c.min
		return strings.Repeat(" ", grow/2) + c.header + strings.Repeat(" ", grow-grow/2)
	}
	pad := w - width(c.header)
	left := pad - pad/2 // extra space on the left, as the seed does
	return strings.Repeat(" ", left) + c.header + strings.Repeat(" ", pad-left)
}

func dataCell(c smiColumn, w int, s string) string {
	if c.rightAlign {
		return strings.Repeat(" ", w-2-width(s)) + s + "  "
	}
	return "  " + s + strings.Repeat(" ", w-2-width(s))
}

func rule(widths []int, ch string) string {
	n := len(widths) - 1
	for _, w := range widths {
		n += w
	}
	return "+" + strings.Repeat(ch, n) + "+"
}

func drawTable(w io.Writer, cols []smiColumn, rows [][]string, widths []int) {
	var b strings.Builder
	b.WriteString("|")
	for i, c := range cols {
		b.WriteString(headerCell(c, widths[i]) + "|")
	}
	fmt.Fprintln(w, b.String())
	fmt.Fprintln(w, rule(widths, "="))
	for _, r := range rows {
		b.Reset()
		b.WriteString("|")
		for i, c := range cols {
			b.WriteString(dataCell(c, widths[i], r[i]) + "|")
		}
		fmt.Fprintln(w, b.String())
		fmt.Fprintln(w, rule(widths, "-"))
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, rule(widths, "-"))
	}
}

func mib(n int64) string { return fmt.Sprintf("%d MiB", n) }

// drawSMI renders SPEC A1's two tables for one accelerator.
func drawSMI(w io.Writer, acc *hacv1.Accelerator, clientVersion, serverVersion string) {
	usage, total := "-", "-"
	var procs [][]string
	if j := acc.Job; j != nil {
		usage, total = mib(j.UsedMib), mib(acc.MemoryMib)
		procs = append(procs, []string{"1", j.Id, fmt.Sprint(j.ClientPid), output.Clean(j.Command), mib(j.UsedMib)})
	}
	rows := [][]string{{"1", acc.DisplayName, acc.Token, acc.Model, usage, total}}
	widths := layout(deviceColumns, rows)
	inner := width(rule(widths, "-")) - 2
	left := "  HAC-SMI " + clientVersion
	right := fmt.Sprintf("Client Version: %s  Server Version: %s  ", clientVersion, serverVersion)
	gap := inner - width(left) - width(right)
	if gap < 1 {
		gap = 1
	}
	fmt.Fprintln(w, rule(widths, "-"))
	fmt.Fprintln(w, "|"+left+strings.Repeat(" ", gap)+right+"|")
	fmt.Fprintln(w, rule(widths, "-"))
	drawTable(w, deviceColumns, rows, widths)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Processes:")
	pw := layout(processColumns, procs)
	fmt.Fprintln(w, rule(pw, "-"))
	drawTable(w, processColumns, procs, pw)
}
