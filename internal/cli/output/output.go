// Package output renders every CLI listing, as an aligned table (-o table,
// or -o wide with more columns) or as data for scripts (-o json, -o yaml:
// the API's fields under its JSON names, numbers as numbers; see
// docs/output.md), so that all commands look and parse alike.
package output

import (
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mattn/go-runewidth"
)

// Formats are the accepted -o values.
var Formats = []string{"table", "wide", "json", "yaml", "csv"}

// Table is a listing: a header and rows of cells. Columns named in Wide
// show with -o wide only. Footer rows (totals) follow the rows in tables
// and are left out of CSV, whose every row is data.
type Table struct {
	Header []string
	Rows   [][]string
	Wide   []string
	Footer [][]string
}

// CheckFormat refuses an -o value that is not one of Formats.
func CheckFormat(format string) error {
	if !slices.Contains(Formats, format) {
		return fmt.Errorf("-o %q: use %s", format, strings.Join(Formats, ", "))
	}
	return nil
}

// Write renders t as a table, or data as JSON or YAML, by format.
func Write(w io.Writer, format string, t Table, data any) error {
	switch format {
	case "table", "":
		return writeTable(w, t.withFooter().narrow())
	case "wide":
		return writeTable(w, t.withFooter())
	case "csv":
		return writeCSV(w, t)
	case "json":
		return WriteJSON(w, data)
	case "yaml":
		v, err := toObject(data)
		if err != nil {
			return err
		}
		return writeYAML(w, v)
	}
	return CheckFormat(format)
}

// writeCSV writes t whole, wide columns included, as RFC 4180 CSV. A cell
// that a spreadsheet would run as a formula (it starts with =, +, -, @, a
// tab or a carriage return, and is more than a lone "-": a tenant can name
// a server so) is prefixed with a quote, as OWASP advises; control
// characters are escaped as in tables.
func writeCSV(w io.Writer, t Table) error {
	cw := csv.NewWriter(w)
	for _, row := range append([][]string{t.Header}, t.Rows...) {
		cells := make([]string, len(row))
		for i, c := range row {
			c = Clean(c)
			if len(c) > 1 && strings.ContainsRune("=+-@\t\r", rune(c[0])) && !isNumber(c) {
				c = "'" + c
			}
			cells[i] = c
		}
		if err := cw.Write(cells); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// isNumber reports whether s is a plain decimal number, which a CSV cell
// keeps as it is even with a sign.
func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil && !strings.ContainsAny(s, "eEnNiIxXpP")
}

// WriteJSON writes v as indented JSON: API messages as FromProto says.
func WriteJSON(w io.Writer, v any) error {
	o, err := toObject(v)
	if err != nil {
		return err
	}
	return writeJSON(w, o)
}

// withFooter is t with its footer as rows.
func (t Table) withFooter() Table {
	t.Rows = append(t.Rows[:len(t.Rows):len(t.Rows)], t.Footer...)
	return t
}

// narrow leaves out the wide columns.
func (t Table) narrow() Table {
	if len(t.Wide) == 0 {
		return t
	}
	var keep []int
	for i, h := range t.Header {
		if !slices.Contains(t.Wide, h) {
			keep = append(keep, i)
		}
	}
	pick := func(cells []string) []string {
		out := make([]string, 0, len(keep))
		for _, i := range keep {
			if i < len(cells) {
				out = append(out, cells[i])
			}
		}
		return out
	}
	n := Table{Header: pick(t.Header)}
	for _, r := range t.Rows {
		n.Rows = append(n.Rows, pick(r))
	}
	return n
}

func writeTable(w io.Writer, t Table) error {
	clean := func(cells []string) []string {
		out := make([]string, len(cells))
		for i, c := range cells {
			out[i] = Clean(c)
		}
		return out
	}
	header := clean(t.Header)
	rows := make([][]string, len(t.Rows))
	for i, r := range t.Rows {
		rows[i] = clean(r)
	}
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = Width(h)
	}
	for _, r := range rows {
		for i := range widths {
			if i < len(r) && Width(r[i]) > widths[i] {
				widths[i] = Width(r[i])
			}
		}
	}
	line := func(cells []string) error {
		var b strings.Builder
		for i := range widths {
			cell := ""
			if i < len(cells) {
				cell = cells[i]
			}
			if i == len(widths)-1 {
				b.WriteString(cell)
				break
			}
			b.WriteString(cell)
			b.WriteString(strings.Repeat(" ", widths[i]-Width(cell)+3))
		}
		_, err := fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		return err
	}
	if err := line(header); err != nil {
		return err
	}
	for _, r := range rows {
		if err := line(r); err != nil {
			return err
		}
	}
	return nil
}

// Clean makes text from others safe to show on a terminal: control and
// format characters (an escape sequence or a newline in a tenant's command
// line, a right-to-left override in a server's name) are shown escaped,
// as Go quotes them, never sent raw to whoever reads the listing.
func Clean(s string) string {
	if !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unsafeRune(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
}

// Width is how many terminal columns s takes: two for each wide
// character (Korean, Chinese, Japanese), none for combining marks.
func Width(s string) int { return runewidth.StringWidth(s) }

// Detail is one record shown whole: a label and a value a line, the
// values aligned (hac job show).
type Detail [][2]string

// WriteDetail renders d as text, or data as JSON or YAML, by format.
func WriteDetail(w io.Writer, format string, d Detail, data any) error {
	if format == "csv" {
		t := Table{Header: []string{"FIELD", "VALUE"}}
		for _, kv := range d {
			t.Rows = append(t.Rows, []string{kv[0], kv[1]})
		}
		return writeCSV(w, t)
	}
	if format != "table" && format != "wide" && format != "" {
		return Write(w, format, Table{}, data)
	}
	width := 0
	for _, kv := range d {
		width = max(width, Width(kv[0]))
	}
	for _, kv := range d {
		label := Clean(kv[0]) + ":"
		if _, err := fmt.Fprintf(w, "%s%s%s\n", label, strings.Repeat(" ", width+3-Width(label)), Clean(kv[1])); err != nil {
			return err
		}
	}
	return nil
}
