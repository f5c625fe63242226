// Package catalog defines the accelerator models users choose from: a name
// such as "small.16gb" and the accelerator memory it grants.
package catalog

import (
	"errors"
	"fmt"
	"strings"
)

// DisplayName is the accelerator's name in hac smi and in messages.
const DisplayName = "HAC AI Accelerator"

// Model is one accelerator model of the catalog.
type Model struct {
	Name      string
	MemoryMiB int64
}

// Catalog is the ordered list of models an operator offers.
type Catalog []Model

// ErrUnknownModel is returned for a model name not in the catalog.
var ErrUnknownModel = errors.New("catalog: unknown accelerator model")

// Default returns the default catalog of SPEC "Words", in display order.
// A model's memory is its number of GB, in GiB.
func Default() Catalog {
	sizes := []struct {
		name string
		gib  int64
	}{
		{"small.16gb", 16}, {"medium.32gb", 32}, {"large.48gb", 48}, {"large.64gb", 64},
		{"xlarge.96gb", 96}, {"2xlarge.192gb", 192}, {"3xlarge.288gb", 288}, {"4xlarge.384gb", 384},
	}
	c := make(Catalog, len(sizes))
	for i, s := range sizes {
		c[i] = Model{Name: s.name, MemoryMiB: s.gib * 1024}
	}
	return c
}

// Lookup returns the model with the given name.
func (c Catalog) Lookup(name string) (Model, error) {
	for _, m := range c {
		if m.Name == name {
			return m, nil
		}
	}
	return Model{}, fmt.Errorf("%w %q (choose one of %s)", ErrUnknownModel, name, strings.Join(c.Names(), ", "))
}

// Names returns the model names in order.
func (c Catalog) Names() []string {
	names := make([]string, len(c))
	for i, m := range c {
		names[i] = m.Name
	}
	return names
}
