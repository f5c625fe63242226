package meter

import (
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParsePrice(t *testing.T) {
	usd, krw := DefaultCurrency, Currency{"KRW", 0}
	for _, c := range []struct {
		cur  Currency
		in   string
		want int64
		err  string
	}{
		{usd, "1.20", 120, ""}, {usd, "1.2", 120, ""}, {usd, "0", 0, ""}, {usd, "0.00", 0, ""}, {usd, "12", 1200, ""},
		{usd, ".5", 50, ""}, {usd, "007.05", 705, ""}, {usd, "10000000.00", MaxPerHour, ""}, {krw, "1500", 1500, ""},
		{usd, "-1", 0, "negative"}, {usd, "1.205", 0, "2 decimal places"}, {usd, "abc", 0, "not a number"}, {usd, "", 0, "not a number"},
		{usd, "1.", 0, "digits after"}, {usd, "1e3", 0, "not a number"}, {usd, "10000000.01", 0, "more than"},
		{usd, "99999999999999999999", 0, "more than"}, {krw, "1.5", 0, "0 decimal places"}, {usd, "+1", 0, "not a number"},
		{usd, "1 2", 0, "not a number"}, {usd, "١٢", 0, "not a number"},
	} {
		got, err := c.cur.ParsePrice(c.in)
		if c.err == "" && (err != nil || got != c.want) {
			t.Errorf("%s %q = %d, %v; want %d", c.cur.Code, c.in, got, err, c.want)
		}
		if c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s %q: err %v, want one saying %q", c.cur.Code, c.in, err, c.err)
		}
	}
}

func FuzzParsePrice(f *testing.F) {
	for _, s := range []string{"1.20", "0", "-1", "1.205", ".5", "99999999999999999999", "1e3", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []Currency{DefaultCurrency, {"KRW", 0}} {
			n, err := c.ParsePrice(s)
			if err != nil {
				continue
			}
			if n < 0 || n > MaxPerHour {
				t.Fatalf("%q parsed to %d, out of bounds", s, n)
			}
			// What is printed reads back as the same amount.
			if back, err := c.ParsePrice(c.Format(n)); err != nil || back != n {
				t.Fatalf("%q -> %d -> %q -> %d, %v", s, n, c.Format(n), back, err)
			}
		}
	})
}

func TestFormat(t *testing.T) {
	usd := DefaultCurrency
	for in, want := range map[int64]string{0: "0.00", 5: "0.05", 120: "1.20", 123456: "1234.56", -5: "-0.05"} {
		if got := usd.Format(in); got != want {
			t.Errorf("Format(%d) = %q, want %q", in, got, want)
		}
	}
	if got := (Currency{"KRW", 0}).Format(1500); got != "1500" {
		t.Errorf("KRW: %q", got)
	}
}

func TestCharge(t *testing.T) {
	for _, c := range []struct{ held, price, want int64 }{
		{msPerHour, 120, 120}, {msPerHour / 2, 120, 60}, {1, 120, 0}, {15_000, 120, 1}, // 0.5 cents rounds up
		{14_999, 120, 0}, {0, 120, 0}, {msPerHour, 0, 0},
		{1 << 50, MaxPerHour, 312_749_974_122_951_111}, // far past any month: 128-bit exact
	} {
		if got := Charge(c.held, c.price); got != c.want {
			t.Errorf("Charge(%d ms, %d/h) = %d, want %d", c.held, c.price, got, c.want)
		}
	}
}

var t0 = time.Date(2026, 11, 30, 22, 30, 0, 0, time.UTC)

func TestSplitAcrossHoursDaysMonthsAndPrices(t *testing.T) {
	s := NewSchedule([]Price{
		{Kind: KindModel, Item: "m", PerHour: 200, From: t0.Add(2 * time.Hour)}, // 2026-12-01 00:30
		{Kind: KindModel, Item: "m", PerHour: 100, From: t0.Add(-time.Hour)},
	})
	got := Split(Millis(t0), Millis(t0.Add(2*time.Hour+45*time.Minute)), s)
	want := []Piece{
		{time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC), 30 * 60_000, 100},
		{time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC), 60 * 60_000, 100},
		{time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), 30 * 60_000, 100},
		{time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), 30 * 60_000, 200},
		{time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC), 15 * 60_000, 200},
	}
	if len(got) != len(want) {
		t.Fatalf("pieces %+v, want %+v", got, want)
	}
	for i := range want {
		if !got[i].Hour.Equal(want[i].Hour) || got[i].HeldMS != want[i].HeldMS || got[i].PerHour != want[i].PerHour {
			t.Errorf("piece %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if p := Split(Millis(t0), Millis(t0), s); len(p) != 0 {
		t.Errorf("an empty interval has pieces: %+v", p)
	}
	if s.At(Millis(t0.Add(-2*time.Hour))) != 0 {
		t.Error("a time before every price is not free")
	}
}

// TestInvoiceIsTheSumOfIntervalsTimesPrices is the property of SPEC P4:
// for random intervals and price changes, every invoice line is the exact
// sum of its intervals' time times the price in force, rounded once, and
// the total is the sum of the lines.
func TestInvoiceIsTheSumOfIntervalsTimesPrices(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		month := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
		items := []string{"small.16gb", "large.48gb"}
		schedules := map[string]Schedule{}
		for _, item := range items {
			var ps []Price
			for range r.IntN(4) {
				ps = append(ps, Price{Kind: KindModel, Item: item, PerHour: r.Int64N(100_000), From: month.Add(time.Duration(r.Int64N(int64(30 * 24 * time.Hour))))})
			}
			schedules[item] = NewSchedule(ps)
		}
		type key struct {
			item    string
			perHour int64
		}
		exact := map[key]*big.Rat{}
		var us []Usage
		for range 1 + r.IntN(30) {
			item := items[r.IntN(len(items))]
			start := month.Add(time.Duration(r.Int64N(int64(29 * 24 * time.Hour)))).Truncate(time.Millisecond)
			end := start.Add(time.Duration(r.Int64N(int64(30 * time.Hour)))).Truncate(time.Millisecond)
			for _, p := range Split(Millis(start), Millis(end), schedules[item]) {
				us = append(us, Usage{Hour: p.Hour, User: "alice", Server: "s", Kind: KindModel, Item: item, PerHour: p.PerHour, Charged: true, HeldMS: p.HeldMS})
			}
			// Independently: walk the interval a millisecond boundary at a
			// time between price changes.
			cuts := []int64{Millis(start)}
			for _, p := range schedules[item] {
				if f := Millis(p.From); f > Millis(start) && f < Millis(end) {
					cuts = append(cuts, f)
				}
			}
			cuts = append(cuts, Millis(end))
			for i := 0; i+1 < len(cuts); i++ {
				k := key{item, schedules[item].At(cuts[i])}
				if exact[k] == nil {
					exact[k] = new(big.Rat)
				}
				exact[k].Add(exact[k], big.NewRat((cuts[i+1]-cuts[i])*k.perHour, msPerHour))
			}
		}
		inv := MakeInvoice("alice", "2026-11", true, us)
		var sum int64
		for _, l := range inv.Lines {
			want := exact[key{l.Item, l.PerHour}]
			if want == nil {
				want = new(big.Rat)
			}
			// Round half up.
			half := new(big.Rat).Add(want, big.NewRat(1, 2))
			rounded := new(big.Int).Quo(half.Num(), half.Denom())
			if rounded.Int64() != l.Charge {
				t.Fatalf("seed %d: line %+v charges %d, the intervals times the prices make %s (%d rounded)", seed, l, l.Charge, want.FloatString(6), rounded)
			}
			sum += l.Charge
		}
		if sum != inv.Total {
			t.Fatalf("seed %d: total %d is not the sum of the lines %d", seed, inv.Total, sum)
		}
		if len(inv.Lines) > len(exact) {
			t.Fatalf("seed %d: %d lines for %d prices", seed, len(inv.Lines), len(exact))
		}
	}
}

func TestReportGroupsAndKeepsFaultsFree(t *testing.T) {
	h := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	us := []Usage{
		{Hour: h, User: "alice", Server: "a", Kind: KindModel, Item: "small.16gb", PerHour: 120, Charged: true, HeldMS: msPerHour / 2, GPUMS: msPerHour / 2},
		{Hour: h.Add(time.Hour), User: "alice", Server: "a", Kind: KindModel, Item: "small.16gb", PerHour: 120, Charged: true, HeldMS: msPerHour / 2},
		{Hour: h.Add(time.Hour), User: "alice", Server: "a", Kind: KindModel, Item: "small.16gb", PerHour: 120, Charged: false, HeldMS: msPerHour},
		{Hour: h.Add(time.Hour), User: "bob", Server: "b", Kind: KindServer, Item: "standard.2x4", PerHour: 10, Charged: true, HeldMS: msPerHour},
	}
	byDay := Report(us, ByDay)
	if len(byDay) != 3 || byDay[0].Key != "2026-11-30" || byDay[0].Charge != 60 || byDay[1].Key != "2026-12-01" || byDay[1].Kind != KindModel ||
		byDay[1].Charge != 60 || byDay[1].FreeMS != msPerHour || byDay[2].Kind != KindServer || byDay[2].Charge != 10 {
		t.Fatalf("by day: %+v", byDay)
	}
	byUser := Report(us, ByUser)
	if len(byUser) != 2 || byUser[0].Key != "alice" || byUser[0].Charge != 120 || byUser[0].HeldMS != msPerHour || byUser[1].Key != "bob" {
		t.Fatalf("by user: %+v", byUser)
	}
	if m := Report(us, ByMonth); m[0].Key != "2026-11" || m[1].Key != "2026-12" {
		t.Fatalf("by month: %+v", m)
	}
	inv := MakeInvoice("alice", "2026-12", true, us[1:3])
	if len(inv.Lines) != 2 || !inv.Lines[0].Charged || inv.Lines[0].Charge != 60 || inv.Lines[1].Charged || inv.Lines[1].Charge != 0 || inv.Total != 60 {
		t.Fatalf("invoice: %+v", inv)
	}
}

func TestParseMonthAndBy(t *testing.T) {
	from, to, err := ParseMonth("2026-12")
	if err != nil || !from.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || !to.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("2026-12: %v %v %v", from, to, err)
	}
	for _, bad := range []string{"2026-13", "2026", "Dec 2026", "", "2026-1-1"} {
		if _, _, err := ParseMonth(bad); err == nil {
			t.Errorf("month %q parsed", bad)
		}
	}
	if _, err := ParseBy("week"); err == nil || !strings.Contains(err.Error(), "hour, day, month") {
		t.Errorf("--by week: %v", err)
	}
	if FormatHours(msPerHour*3/2) != "1.5000" || FormatHours(1800) != "0.0005" || FormatHours(1799) != "0.0005" || FormatHours(1) != "0.0000" || FormatHours(-msPerHour) != "-1.0000" {
		t.Errorf("FormatHours: %s %s %s", FormatHours(msPerHour*3/2), FormatHours(1800), FormatHours(1799))
	}
}
