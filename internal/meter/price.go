package meter

import (
	"fmt"
	"slices"
	"time"
)

// Kind is what a price is for.
type Kind string

// The kinds of price: an accelerator model while a program holds it, a
// server type while the server runs, and while it is stopped.
const (
	KindModel         Kind = "model"
	KindServer        Kind = "server"
	KindStoppedServer Kind = "stopped-server"
)

// Kinds are the kinds of price, in the order listings show them.
var Kinds = []Kind{KindModel, KindServer, KindStoppedServer}

// ParseKind reads a kind of price.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown kind of price %q (choose model, server or stopped-server)", s)
}

// Price is an amount per hour for one item (a model or a server type),
// in force from From until the next price of the same item.
type Price struct {
	Kind    Kind
	Item    string
	PerHour int64 // minor units
	From    time.Time
}

// Schedule is the prices of one item, oldest first.
type Schedule []Price

// NewSchedule sorts the prices of one item by the time they take effect.
func NewSchedule(prices []Price) Schedule {
	s := slices.Clone(prices)
	slices.SortStableFunc(s, func(a, b Price) int { return a.From.Compare(b.From) })
	return s
}

// At is the price per hour in force at the millisecond ms: 0 before the
// first price.
func (s Schedule) At(ms int64) int64 {
	i, _ := slices.BinarySearchFunc(s, ms, func(p Price, ms int64) int {
		if p.From.UnixMilli() > ms {
			return 1
		}
		return -1
	})
	if i == 0 {
		return 0
	}
	return s[i-1].PerHour
}

// Piece is the part of a held interval that falls in one UTC hour at one
// price.
type Piece struct {
	Hour    time.Time // the hour's start, UTC
	HeldMS  int64
	PerHour int64
}

// Millis is how the meter counts time: milliseconds since the epoch.
func Millis(t time.Time) int64 { return t.UnixMilli() }

// Split cuts the held interval [start, end) (milliseconds since the
// epoch) at every UTC hour and at every price change of s, in time order.
// The pieces' held times add up to end - start exactly.
func Split(startMS, endMS int64, s Schedule) []Piece {
	var out []Piece
	for at := startMS; at < endMS; {
		hour := at - at%msPerHour
		next := min(hour+msPerHour, endMS)
		price := s.At(at)
		// The first price change inside (at, next) ends the piece early.
		for _, p := range s {
			if from := p.From.UnixMilli(); from > at && from < next {
				next = from
				break
			}
		}
		if n := len(out); n > 0 && out[n-1].Hour.UnixMilli() == hour && out[n-1].PerHour == price {
			out[n-1].HeldMS += next - at
		} else {
			out = append(out, Piece{Hour: time.UnixMilli(hour).UTC(), HeldMS: next - at, PerHour: price})
		}
		at = next
	}
	return out
}

// SumByDay sums pieces (in time order, as Split gives them) by UTC day and
// price: the Hour of each is its day's start.
func SumByDay(pieces []Piece) []Piece {
	var out []Piece
	for _, p := range pieces {
		p.Hour = p.Hour.Truncate(24 * time.Hour)
		found := false
		for i := range out {
			if out[i].Hour.Equal(p.Hour) && out[i].PerHour == p.PerHour {
				out[i].HeldMS += p.HeldMS
				found = true
				break
			}
		}
		if !found {
			out = append(out, p)
		}
	}
	return out
}
