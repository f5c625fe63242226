package output

import (
	"bytes"
	"testing"
)

func TestTable(t *testing.T) {
	var b bytes.Buffer
	err := Write(&b, "table", Table{Header: []string{"NAME", "STATE"}, Rows: [][]string{{"node-1", "ready"}, {"n2", "lost"}}}, nil)
	want := "NAME     STATE\nnode-1   ready\nn2       lost\n"
	if err != nil || b.String() != want {
		t.Fatalf("got %q, %v", b.String(), err)
	}
	if err := Write(&b, "yaml", Table{}, nil); err == nil {
		t.Fatal("accepted -o yaml")
	}
}
