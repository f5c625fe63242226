package cli

import (
	"strings"
	"testing"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// TestUsageTableShowsHoursInTheOperatorsZone: the meter keeps UTC; a
// table shows hours in the zone the control plane names, days as UTC
// days, and says which.
func TestUsageTableShowsHoursInTheOperatorsZone(t *testing.T) {
	u := &hacv1.GetUsageResponse{Currency: "KRW", By: "hour", DisplayZone: "Asia/Seoul", Total: "1500", Open: true,
		Lines: []*hacv1.UsageLine{{Key: "2026-12-01T14:00Z", Kind: "model", HeldMs: 1_800_000, Charge: "1500"}}}
	tab := usageTable(u)
	if tab.Header[0] != "HOUR (Asia/Seoul)" || tab.Rows[0][0] != "2026-12-01 23:00" || tab.Rows[0][2] != "0.5000" || tab.Header[5] != "CHARGE (KRW)" {
		t.Fatalf("%v %v", tab.Header, tab.Rows)
	}
	if last := tab.Footer[0]; len(tab.Rows) != 1 || !strings.Contains(last[0], "so far") || last[5] != "1500" {
		t.Fatalf("total row %v", last)
	}
	u.By, u.Lines[0].Key = "day", "2026-12-01"
	if tab := usageTable(u); tab.Header[0] != "DAY (UTC)" || tab.Rows[0][0] != "2026-12-01" {
		t.Fatalf("%v %v", tab.Header, tab.Rows)
	}
	u.DisplayZone = "Nowhere/Atlantis"
	u.By, u.Lines[0].Key = "hour", "2026-12-01T14:00Z"
	if tab := usageTable(u); tab.Header[0] != "HOUR (UTC)" || tab.Rows[0][0] != "2026-12-01 14:00" {
		t.Fatalf("an unknown zone: %v %v", tab.Header, tab.Rows)
	}
}
