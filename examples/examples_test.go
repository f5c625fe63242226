package examples

import "testing"

func TestReferenceModels(t *testing.T) {
	ms := ReferenceModels()
	if len(ms) != 2 {
		t.Fatalf("%d reference models", len(ms))
	}
	for _, m := range ms {
		if len(m.Files["train.py"]) == 0 || m.Command == "" || m.Description == "" {
			t.Errorf("%s is incomplete: %d files", m.Name, len(m.Files))
		}
	}
	if m, err := LookupReference("transformer-char"); err != nil || len(m.Files["corpus.txt"]) == 0 {
		t.Errorf("transformer-char: %v, %d files", err, len(m.Files))
	}
	if _, err := LookupReference("gpt-5"); err == nil {
		t.Error("found an unknown model")
	}
}
