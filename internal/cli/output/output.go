// Package output renders every CLI listing, as an aligned table or as JSON
// (-o table|json), so that all commands look and parse alike.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

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
	widths := make([]int, len(t.Header))
	for i, h := range t.Header {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range t.Rows {
		for i := range widths {
			if i < len(r) && utf8.RuneCountInString(r[i]) > widths[i] {
				widths[i] = utf8.RuneCountInString(r[i])
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
			b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell)+3))
		}
		_, err := fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		return err
	}
	if err := line(t.Header); err != nil {
		return err
	}
	for _, r := range t.Rows {
		if err := line(r); err != nil {
			return err
		}
	}
	return nil
}
