package catalog

import (
	"fmt"
	"strings"
)

// ServerType is a server size (SPEC S2 "server type").
type ServerType struct {
	Name      string
	CPUs      int
	MemoryMiB int64
}

// ServerTypes are the sizes a server can have, smallest first.
var ServerTypes = []ServerType{
	{"standard.1x2", 1, 2048}, {"standard.2x4", 2, 4096}, {"standard.4x8", 4, 8192},
	{"standard.8x16", 8, 16384}, {"standard.16x32", 16, 32768},
}

// Server defaults and choices (SPEC S2).
const (
	DefaultServerType = "standard.2x4"
	DefaultZone       = "dx-m1"
	DefaultTier       = "standard"
	// RootDiskGB is the root disk every server gets (hourly plan only).
	RootDiskGB = 100
)

// Zones and Tiers are the locations and tiers servers can be made in.
var (
	Zones = []string{"dx-m1"}
	Tiers = []string{"standard"}
)

// LookupServerType returns the server type with that name.
func LookupServerType(name string) (ServerType, error) {
	var names []string
	for _, t := range ServerTypes {
		if t.Name == name {
			return t, nil
		}
		names = append(names, t.Name)
	}
	return ServerType{}, fmt.Errorf("unknown server type %q (choose one of %s)", name, strings.Join(names, ", "))
}

// OneOf checks that value is one of choices, naming them if not.
func OneOf(what, value string, choices []string) error {
	for _, c := range choices {
		if c == value {
			return nil
		}
	}
	return fmt.Errorf("unknown %s %q (choose one of %s)", what, value, strings.Join(choices, ", "))
}
