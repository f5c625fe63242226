package meter

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Usage is held time at one price: one hour of one user's server and item,
// or a sum of such hours.
type Usage struct {
	Hour    time.Time // UTC
	User    string
	Server  string
	Kind    Kind
	Item    string // the model, or the server type
	PerHour int64
	// Charged is false for the runs an infrastructure fault ended (SPEC
	// A10): their time is shown, never charged.
	Charged bool
	HeldMS  int64
	GPUMS   int64 // held time times GPUs
}

// By is what a report's lines group by.
type By string

// The groupings of hac usage.
const (
	ByHour   By = "hour"
	ByDay    By = "day"
	ByMonth  By = "month"
	ByServer By = "server"
	ByModel  By = "model"
	ByUser   By = "user"
)

// Bys are the groupings, as hac usage --by takes them.
var Bys = []By{ByHour, ByDay, ByMonth, ByServer, ByModel, ByUser}

// ParseBy reads a grouping.
func ParseBy(s string) (By, error) {
	for _, b := range Bys {
		if string(b) == s {
			return b, nil
		}
	}
	names := make([]string, len(Bys))
	for i, b := range Bys {
		names[i] = string(b)
	}
	return "", fmt.Errorf("--by %q: group by %s", s, strings.Join(names, ", "))
}

// key is the group of u.
func (b By) key(u Usage) string {
	switch b {
	case ByHour:
		return u.Hour.UTC().Format("2006-01-02T15:04Z")
	case ByDay:
		return u.Hour.UTC().Format(time.DateOnly)
	case ByMonth:
		return u.Hour.UTC().Format("2006-01")
	case ByServer:
		return u.User + "/" + u.Server
	case ByModel:
		return u.Item
	}
	return u.User
}

// Line is one row of a report: a group's time and charge of one kind.
type Line struct {
	Key    string
	Kind   Kind
	HeldMS int64 // charged time
	FreeMS int64 // time not charged (infrastructure faults)
	GPUMS  int64 // charged time times GPUs
	Charge int64 // minor units
}

// Report sums us into lines by b and kind, in key order (times ascending)
// and then in the order of Kinds. Each line's charge is rounded once per
// price it held at.
func Report(us []Usage, b By) []Line {
	type at struct {
		key     string
		kind    Kind
		perHour int64
	}
	held := map[at]int64{}
	lines := map[[2]string]*Line{}
	for _, u := range us {
		k := b.key(u)
		l := lines[[2]string{k, string(u.Kind)}]
		if l == nil {
			l = &Line{Key: k, Kind: u.Kind}
			lines[[2]string{k, string(u.Kind)}] = l
		}
		if !u.Charged {
			l.FreeMS += u.HeldMS
			continue
		}
		l.HeldMS += u.HeldMS
		l.GPUMS += u.GPUMS
		held[at{k, u.Kind, u.PerHour}] += u.HeldMS
	}
	for a, ms := range held {
		lines[[2]string{a.key, string(a.kind)}].Charge += Charge(ms, a.perHour)
	}
	out := make([]Line, 0, len(lines))
	for _, l := range lines {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(x, y Line) int {
		return cmp.Or(strings.Compare(x.Key, y.Key), cmp.Compare(slices.Index(Kinds, x.Kind), slices.Index(Kinds, y.Kind)))
	})
	return out
}

// Invoice is one user's statement for one month.
type Invoice struct {
	User  string
	Month string // 2006-01, UTC
	// Final is false while a run or a server the month metered is still
	// open: the statement can still grow.
	Final bool
	Lines []InvoiceLine
	Total int64
}

// InvoiceLine is the time of one item on one server at one price.
type InvoiceLine struct {
	Kind    Kind
	Item    string
	Server  string
	PerHour int64
	Charged bool
	HeldMS  int64
	GPUMS   int64
	Charge  int64
}

// MakeInvoice sums one user's usage of one month into lines, each rounded
// once; the total is the sum of the lines. The lines are in the order of
// Kinds, then item, server, price, with the uncharged after the charged.
func MakeInvoice(user, month string, final bool, us []Usage) Invoice {
	type at struct {
		kind         Kind
		item, server string
		perHour      int64
		charged      bool
	}
	sums := map[at]*InvoiceLine{}
	for _, u := range us {
		a := at{u.Kind, u.Item, u.Server, u.PerHour, u.Charged}
		l := sums[a]
		if l == nil {
			l = &InvoiceLine{Kind: u.Kind, Item: u.Item, Server: u.Server, PerHour: u.PerHour, Charged: u.Charged}
			sums[a] = l
		}
		l.HeldMS += u.HeldMS
		l.GPUMS += u.GPUMS
	}
	inv := Invoice{User: user, Month: month, Final: final}
	for _, l := range sums {
		if l.Charged {
			l.Charge = Charge(l.HeldMS, l.PerHour)
		}
		inv.Lines = append(inv.Lines, *l)
		inv.Total += l.Charge
	}
	slices.SortFunc(inv.Lines, func(x, y InvoiceLine) int {
		return cmp.Or(cmp.Compare(slices.Index(Kinds, x.Kind), slices.Index(Kinds, y.Kind)), strings.Compare(x.Item, y.Item),
			strings.Compare(x.Server, y.Server), cmp.Compare(x.PerHour, y.PerHour), -cmp.Compare(btoi(x.Charged), btoi(y.Charged)))
	})
	return inv
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ParseMonth reads a month, 2006-01, as its UTC bounds.
func ParseMonth(s string) (from, to time.Time, err error) {
	from, err = time.Parse("2006-01", s)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("month %q: give it as YYYY-MM, such as 2026-11", s)
	}
	return from, from.AddDate(0, 1, 0), nil
}

// FormatHours prints milliseconds as hours with four decimals (0.36 s),
// rounded half up.
func FormatHours(ms int64) string {
	sign := ""
	if ms < 0 {
		sign, ms = "-", -ms
	}
	tenThousandths := (ms*10 + msPerHour/2000) / (msPerHour / 1000)
	return fmt.Sprintf("%s%d.%04d", sign, tenThousandths/10000, tenThousandths%10000)
}
