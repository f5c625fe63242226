package meter

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Currency is what charges are counted in: its ISO 4217 code and the
// number of decimal places of its minor unit.
type Currency struct {
	Code   string
	Digits int
}

// Currencies are the currencies an operator can choose.
var Currencies = []Currency{{"USD", 2}, {"EUR", 2}, {"GBP", 2}, {"KRW", 0}, {"JPY", 0}, {"CNY", 2}, {"INR", 2}}

// DefaultCurrency is the currency of a control plane that names none.
var DefaultCurrency = Currencies[0]

// LookupCurrency returns the currency with that code.
func LookupCurrency(code string) (Currency, error) {
	var codes []string
	for _, c := range Currencies {
		if strings.EqualFold(c.Code, code) {
			return c, nil
		}
		codes = append(codes, c.Code)
	}
	return Currency{}, fmt.Errorf("unknown currency %q (choose one of %s)", code, strings.Join(codes, ", "))
}

// MaxPerHour bounds a price: 10,000,000 major units an hour at two
// digits. The bound keeps every product of held time and price in 128 bits
// and every sum of charges in 64.
const MaxPerHour = 1_000_000_000

// ParsePrice reads an amount per hour, such as 1.20, into minor units.
func (c Currency) ParsePrice(s string) (int64, error) {
	whole, frac, dotted := strings.Cut(strings.TrimSpace(s), ".")
	bad := func(why string) error {
		return fmt.Errorf("price %q: %s (give an amount in %s such as %s)", s, why, c.Code, c.Format(120*pow10(max(c.Digits-2, 0))))
	}
	switch {
	case whole == "" && frac == "":
		return 0, bad("not a number")
	case strings.HasPrefix(whole, "-"):
		return 0, bad("a price cannot be negative")
	case dotted && len(frac) > c.Digits:
		return 0, bad(fmt.Sprintf("%s has %d decimal places", c.Code, c.Digits))
	case dotted && frac == "":
		return 0, bad("a decimal point needs digits after it")
	}
	for _, part := range []string{whole, frac} {
		for _, r := range part {
			if r < '0' || r > '9' {
				return 0, bad("not a number")
			}
		}
	}
	frac += strings.Repeat("0", c.Digits-len(frac))
	if len(whole)+len(frac) > 18 {
		return 0, bad(fmt.Sprintf("more than %s an hour", c.Format(MaxPerHour)))
	}
	n, err := strconv.ParseInt(strings.TrimLeft(whole+frac, "0")+"0", 10, 64)
	if err != nil {
		return 0, bad("not a number")
	}
	n /= 10 // the appended 0 kept an all-zero amount parsable
	if n > MaxPerHour {
		return 0, bad(fmt.Sprintf("more than %s an hour", c.Format(MaxPerHour)))
	}
	return n, nil
}

// Format prints minor units as an amount: 120 as "1.20" in USD, "120" in
// KRW.
func (c Currency) Format(minor int64) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	s := strconv.FormatInt(minor, 10)
	if c.Digits == 0 {
		return sign + s
	}
	if len(s) <= c.Digits {
		s = strings.Repeat("0", c.Digits-len(s)+1) + s
	}
	return sign + s[:len(s)-c.Digits] + "." + s[len(s)-c.Digits:]
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// msPerHour is the divisor of a charge: a price is per hour, held time in
// milliseconds.
const msPerHour = 3_600_000

// Charge is what held milliseconds cost at a price per hour, in minor
// units, rounded half up: exact in 128 bits for any held time and price.
func Charge(heldMS, perHour int64) int64 {
	if heldMS <= 0 || perHour <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(heldMS), uint64(perHour))
	lo, carry := bits.Add64(lo, msPerHour/2, 0)
	hi += carry
	if hi >= msPerHour {
		panic(errOverflow) // more than 2^64 hours of charges: cannot be reached through MaxPerHour
	}
	q, _ := bits.Div64(hi, lo, msPerHour)
	if q > math.MaxInt64 {
		panic(errOverflow)
	}
	return int64(q)
}

var errOverflow = errors.New("meter: a charge overflows")
