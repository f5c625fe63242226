// Package output renders every CLI listing, as an aligned table or as JSON
// (-o table|json), so that all commands look and parse alike.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mattn/go-runewidth"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Formats are the accepted -o values.
var Formats = []string{"table", "json"}

// Table is a listing: a header and rows of cells.
type Table struct {
	Header []string
	Rows   [][]string
}

// Write renders t as a table, or data as JSON, by format.
func Write(w io.Writer, format string, t Table, data any) error {
	switch format {
	case "table", "":
		return writeTable(w, t)
	case "json":
		return WriteJSON(w, data)
	}
	return fmt.Errorf("unknown output format %q: use %s", format, strings.Join(Formats, " or "))
}

// WriteJSON writes v as indented JSON; protobuf messages use protojson.
func WriteJSON(w io.Writer, v any) error {
	if m, ok := v.(proto.Message); ok {
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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
