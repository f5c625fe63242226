package output

import (
	"bytes"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	var b bytes.Buffer
	err := Write(&b, "table", Table{Header: []string{"NAME", "STATE"}, Rows: [][]string{{"node-1", "ready"}, {"n2", "lost"}}}, nil)
	want := "NAME     STATE\nnode-1   ready\nn2       lost\n"
	if err != nil || b.String() != want {
		t.Fatalf("got %q, %v", b.String(), err)
	}
	if err := Write(&b, "xml", Table{}, nil); err == nil {
		t.Fatal("accepted -o xml")
	}
}

// TestTableCleansAndAligns: a cell's control and format characters are
// shown escaped (a tenant's command line cannot drive the reader's
// terminal), and columns align by display width (Korean takes two columns
// a character).
func TestTableCleansAndAligns(t *testing.T) {
	var b bytes.Buffer
	err := Write(&b, "table", Table{Header: []string{"SERVER", "COMMAND"}, Rows: [][]string{
		{"학습서버", "python3 train.py"},
		{"web1", "sh -c \x1b]0;pwned\x07\x1b[2J\nrm\u202e"},
	}}, nil)
	want := "SERVER     COMMAND\n" +
		"학습서버   python3 train.py\n" +
		"web1       sh -c \\x1b]0;pwned\\a\\x1b[2J\\nrm\\u202e\n"
	if err != nil || b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	if Width("학습") != 4 || Clean("plain") != "plain" {
		t.Errorf("Width(학습) = %d, Clean(plain) = %q", Width("학습"), Clean("plain"))
	}
}

// TestCSVDisarmsFormulas: a cell a spreadsheet would run (a tenant's
// server named =HYPERLINK(...)) is quoted; numbers and "-" are kept.
func TestCSVDisarmsFormulas(t *testing.T) {
	var b strings.Builder
	tab := Table{Header: []string{"A", "B", "C", "D", "E"}, Rows: [][]string{{"=HYPERLINK(\"http://x\")", "+1+1", "-12.50", "-", "@SUM(A1)"}}, Wide: []string{"E"}}
	if err := Write(&b, "csv", tab, nil); err != nil {
		t.Fatal(err)
	}
	want := "A,B,C,D,E\n\"'=HYPERLINK(\"\"http://x\"\")\",'+1+1,-12.50,-,'@SUM(A1)\n"
	if b.String() != want {
		t.Fatalf("csv:\n%s\nwant:\n%s", b.String(), want)
	}
}
