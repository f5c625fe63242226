package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hac-project/hac/internal/agent"
)

// uidRangeFlag is a FIRST-LAST uid range flag.
type uidRangeFlag struct{ r *agent.UIDRange }

func (f uidRangeFlag) String() string {
	if f.r == nil || f.r.Count == 0 {
		return ""
	}
	return fmt.Sprintf("%d-%d", f.r.First, f.r.First+f.r.Count-1)
}

func (f uidRangeFlag) Set(s string) error {
	r, err := agent.ParseUIDRange(s)
	if err != nil {
		return err
	}
	*f.r = r
	return nil
}

func (uidRangeFlag) Type() string { return "FIRST-LAST" }

// sizeFlag is a byte size flag: a number with an optional KiB, MiB, GiB
// or TiB suffix.
type sizeFlag struct{ n *int64 }

func (f sizeFlag) String() string {
	if f.n == nil || *f.n == 0 {
		return ""
	}
	return strconv.FormatInt(*f.n, 10)
}

func (f sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f.n = n
	return nil
}

func (sizeFlag) Type() string { return "SIZE" }

// parseSize reads "64GiB", "512MiB" or a plain number of bytes.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}, {"", 0}}
	for _, u := range units {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
		if err != nil || n <= 0 || n > 1<<(62-u.shift) {
			break
		}
		return n << u.shift, nil
	}
	return 0, fmt.Errorf("bad size %q: use a number with KiB, MiB, GiB or TiB, such as 64GiB", s)
}
