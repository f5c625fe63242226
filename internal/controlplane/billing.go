package controlplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/catalog"
	"github.com/hac-project/hac/internal/meter"
	"github.com/hac-project/hac/internal/store"
)

// settleCurrency is the currency of the database's amounts: chosen at
// the first start (cur, or meter.DefaultCurrency when cur has no code)
// and kept, as prices are stored in its minor units. Another one later is
// refused.
func settleCurrency(ctx context.Context, st *store.Store, cur meter.Currency) (meter.Currency, error) {
	var kept string
	err := st.Update(ctx, func(tx *store.Tx) error {
		var err error
		if kept, err = tx.Setting("currency"); errors.Is(err, store.ErrNotFound) {
			kept = cmp.Or(cur.Code, meter.DefaultCurrency.Code)
			return tx.SetSetting("currency", kept)
		}
		return err
	})
	if err != nil {
		return cur, fmt.Errorf("controlplane: currency: %w", err)
	}
	if cur.Code != "" && cur.Code != kept {
		return cur, fmt.Errorf("controlplane: this control plane counts money in %s, and its prices are stored in %s's minor units: start it with --currency %s (or none)", kept, kept, kept)
	}
	return meter.LookupCurrency(kept)
}

// billingService implements hacv1connect.BillingServiceHandler: prices,
// usage and invoices from the meter (store/meter.go, package meter).
type billingService struct{ s *Server }

// maxUsageSpan bounds the hours one usage report may cover.
const maxUsageSpan = 5 * 366 * 24 * time.Hour

func (b billingService) SetPrice(ctx context.Context, req *connect.Request[hacv1.SetPriceRequest]) (*connect.Response[hacv1.SetPriceResponse], error) {
	p := principalFrom(ctx)
	if !p.user.Admin {
		return nil, apiError(fmt.Errorf("%w: %s may not set prices: only an admin may", ErrPermission, p.describe()))
	}
	m := req.Msg
	kind, err := meter.ParseKind(m.Kind)
	if err != nil {
		return nil, apiError(fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	if err := b.s.checkItem(kind, m.Item); err != nil {
		return nil, apiError(err)
	}
	perHour, err := b.s.cfg.Currency.ParsePrice(m.Amount)
	if err != nil {
		return nil, apiError(fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	var asked time.Time
	if m.EffectiveFrom != nil {
		if err := m.EffectiveFrom.CheckValid(); err != nil {
			return nil, apiError(fmt.Errorf("%w: effective from: %v", ErrInvalid, err))
		}
		if asked = m.EffectiveFrom.AsTime(); !asked.Before(store.MaxPriceFrom) {
			return nil, apiError(fmt.Errorf("%w: effective from %s is too far ahead: give a time before 2200", ErrInvalid, asked.UTC().Format(time.RFC3339)))
		}
	}
	// A price takes effect on a whole second, and never before the
	// transaction that records it (store.SetPrice): what was metered
	// before is never priced again. A price for now takes the next whole
	// second, again if the transaction came later than that.
	var price meter.Price
	var now time.Time
	for try := 0; ; try++ {
		now = b.s.cfg.Now()
		from := asked
		if m.EffectiveFrom == nil {
			from = now
		}
		from = from.Truncate(time.Second)
		if from.Before(now) {
			if m.EffectiveFrom != nil && now.Sub(from) > time.Second {
				return nil, apiError(fmt.Errorf("%w: effective from %s is in the past: a price change never rewrites what was metered; give a later time, or none for now", ErrInvalid, from.UTC().Format(time.RFC3339)))
			}
			from = now.Truncate(time.Second).Add(time.Second)
		}
		price = meter.Price{Kind: kind, Item: m.Item, PerHour: perHour, From: from}
		err = b.s.store.Update(ctx, func(tx *store.Tx) error { return tx.SetPrice(price, b.s.cfg.Now(), p.user.ID) })
		if !errors.Is(err, store.ErrPastPrice) {
			break
		}
		if m.EffectiveFrom != nil || try == 2 {
			return nil, apiError(fmt.Errorf("%w: effective from %s passed while the price was recorded: give a later time", ErrInvalid, from.UTC().Format(time.RFC3339)))
		}
	}
	if err != nil {
		return nil, apiError(err)
	}
	b.s.cfg.Logger.Info("price set", "kind", kind, "item", m.Item, "per_hour", b.s.cfg.Currency.Format(perHour), "from", price.From, "by", p.user.Name)
	return connect.NewResponse(&hacv1.SetPriceResponse{Price: b.priceProto(store.PriceEntry{Price: price, SetAt: now, SetBy: p.user.Name}, "")}), nil
}

// checkItem refuses an item that kind of price cannot be for.
func (s *Server) checkItem(kind meter.Kind, item string) error {
	if kind == meter.KindModel {
		if _, err := s.cfg.Catalog.Lookup(item); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return nil
	}
	if _, err := catalog.LookupServerType(item); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

func (b billingService) priceProto(e store.PriceEntry, state string) *hacv1.Price {
	return &hacv1.Price{Kind: string(e.Kind), Item: e.Item, PerHourMinor: e.PerHour, PerHour: b.s.cfg.Currency.Format(e.PerHour),
		EffectiveFrom: timestamppb.New(e.From), SetAt: timestamppb.New(e.SetAt), SetBy: e.SetBy, State: state}
}

func (b billingService) ListPrices(ctx context.Context, _ *connect.Request[hacv1.ListPricesRequest]) (*connect.Response[hacv1.ListPricesResponse], error) {
	var entries []store.PriceEntry
	if err := b.s.store.View(ctx, func(tx *store.Tx) (err error) { entries, err = tx.Prices(); return err }); err != nil {
		return nil, apiError(err)
	}
	now := b.s.cfg.Now()
	out := &hacv1.ListPricesResponse{Currency: b.s.cfg.Currency.Code, DisplayZone: b.s.displayZone()}
	for i, e := range entries {
		state := "in-force"
		switch {
		case e.From.After(now):
			state = "scheduled"
		case i+1 < len(entries) && entries[i+1].Kind == e.Kind && entries[i+1].Item == e.Item && !entries[i+1].From.After(now):
			state = "past"
		}
		out.Prices = append(out.Prices, b.priceProto(e, state))
	}
	return connect.NewResponse(out), nil
}

// whose resolves the user a report is for: the caller, or with an admin's
// token the named user, or everyone (0) when an admin names none.
func (s *Server) whose(ctx context.Context, name string) (int64, error) {
	p := principalFrom(ctx)
	switch {
	case name == "" && p.user.Admin:
		return 0, nil
	case name == "" || name == p.user.Name:
		return p.user.ID, nil
	case !p.user.Admin:
		return 0, fmt.Errorf("%w: %s may see its own usage only; only an admin may name another user (--user)", ErrPermission, p.describe())
	}
	var id int64
	err := s.store.View(ctx, func(tx *store.Tx) error {
		u, err := tx.UserByName(name)
		id = u.ID
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return 0, fmt.Errorf("%w: there is no user %q", ErrInvalid, name)
	}
	return id, err
}

func (b billingService) GetUsage(ctx context.Context, req *connect.Request[hacv1.GetUsageRequest]) (*connect.Response[hacv1.GetUsageResponse], error) {
	m := req.Msg
	by := meter.ByDay
	if m.By != "" {
		var err error
		if by, err = meter.ParseBy(m.By); err != nil {
			return nil, apiError(fmt.Errorf("%w: %v", ErrInvalid, err))
		}
	}
	now := b.s.cfg.Now()
	month := time.Date(now.UTC().Year(), now.UTC().Month(), 1, 0, 0, 0, 0, time.UTC)
	from, to, err := timeRange(m.From, m.To, month, now)
	if err != nil {
		return nil, apiError(err)
	}
	userID, err := b.s.whose(ctx, m.User)
	if err != nil {
		return nil, apiError(err)
	}
	per := time.Duration(0)
	switch by {
	case meter.ByHour:
		per = time.Hour
	case meter.ByDay, meter.ByMonth:
		per = 24 * time.Hour
	}
	usage, live, err := b.s.usage(ctx, store.UsageFilter{UserID: userID, From: from, To: to, Per: per}, now)
	if err != nil {
		return nil, apiError(err)
	}
	cur := b.s.cfg.Currency
	out := &hacv1.GetUsageResponse{Currency: cur.Code, By: string(by), From: timestamppb.New(from), To: timestamppb.New(to), Open: len(live) > 0, DisplayZone: b.s.displayZone()}
	for _, l := range meter.Report(usage, by) {
		out.Lines = append(out.Lines, &hacv1.UsageLine{Key: l.Key, Kind: string(l.Kind), HeldMs: l.HeldMS, FreeMs: l.FreeMS, GpuMs: l.GPUMS,
			ChargeMinor: l.Charge, Charge: cur.Format(l.Charge)})
		out.TotalMinor += l.Charge
	}
	out.Total = cur.Format(out.TotalMinor)
	return connect.NewResponse(out), nil
}

// timeRange reads a report's bounds: from defaults to def, to to now; the
// hours reported are those that start in [from, to).
func timeRange(f, t *timestamppb.Timestamp, def, now time.Time) (time.Time, time.Time, error) {
	from, to := def, now
	for _, b := range []struct {
		ts   *timestamppb.Timestamp
		into *time.Time
		name string
	}{{f, &from, "--from"}, {t, &to, "--to"}} {
		if b.ts == nil {
			continue
		}
		if err := b.ts.CheckValid(); err != nil {
			return from, to, fmt.Errorf("%w: %s: %v", ErrInvalid, b.name, err)
		}
		*b.into = b.ts.AsTime()
	}
	switch {
	case !from.Before(to):
		return from, to, fmt.Errorf("%w: --from %s is not before --to %s: give an earlier --from or a later --to",
			ErrInvalid, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	case to.Sub(from) > maxUsageSpan:
		return from, to, fmt.Errorf("%w: a report covers at most 5 years: narrow --from and --to", ErrInvalid)
	}
	// Whole hours: the meter's buckets.
	from = from.Truncate(time.Hour)
	if tr := to.Truncate(time.Hour); tr.Before(to) {
		to = tr.Add(time.Hour)
	}
	return from, to, nil
}

// usage is the metered time f selects: the closed records' hours, and the
// open records' time up to now, at the prices in force, read in one
// transaction; live are the open records that counted.
func (s *Server) usage(ctx context.Context, f store.UsageFilter, now time.Time) (_ []meter.Usage, live []store.OpenRecord, _ error) {
	var closed []meter.Usage
	var all []store.OpenRecord
	err := s.store.View(ctx, func(tx *store.Tx) error {
		var err error
		if closed, err = tx.Usage(f); err != nil {
			return err
		}
		all, err = tx.OpenRecords(f.UserID, f.To)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	start, end := meter.Millis(f.From), min(meter.Millis(f.To), meter.Millis(now))
	for _, r := range all {
		if meter.Millis(r.Start) < end {
			live = append(live, r)
		}
		for _, p := range meter.Split(max(meter.Millis(r.Start), start), end, r.Schedule) {
			hour := p.Hour
			switch f.Per {
			case 24 * time.Hour:
				hour = hour.Truncate(24 * time.Hour)
			case 0:
				hour = time.UnixMilli(0).UTC()
			}
			closed = append(closed, meter.Usage{Hour: hour, User: r.User, Server: r.Server, Kind: r.Kind, Item: r.Item,
				PerHour: p.PerHour, Charged: true, HeldMS: p.HeldMS, GPUMS: p.HeldMS * r.GPUs})
		}
	}
	return closed, live, nil
}

func (b billingService) GetInvoice(ctx context.Context, req *connect.Request[hacv1.GetInvoiceRequest]) (*connect.Response[hacv1.GetInvoiceResponse], error) {
	from, to, err := meter.ParseMonth(req.Msg.Month)
	if err != nil {
		return nil, apiError(fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	now := b.s.cfg.Now()
	if !from.Before(now) {
		return nil, apiError(fmt.Errorf("%w: month %s has not begun: nothing is metered in it yet", ErrInvalid, req.Msg.Month))
	}
	userID, err := b.s.whose(ctx, req.Msg.User)
	if err != nil {
		return nil, apiError(err)
	}
	usage, live, err := b.s.usage(ctx, store.UsageFilter{UserID: userID, From: from, To: to}, now)
	if err != nil {
		return nil, apiError(err)
	}
	// A month is final once it ended faultLate ago (a node's late word on a
	// run is heard until then) and nothing it metered is still open.
	byUser := map[string][]meter.Usage{}
	final := map[string]bool{}
	var users []string
	for _, u := range usage {
		if _, ok := byUser[u.User]; !ok {
			users = append(users, u.User)
			final[u.User] = settled(to, now)
		}
		byUser[u.User] = append(byUser[u.User], u)
	}
	for _, r := range live {
		final[r.User] = false // it may still add time to the month
	}
	if userID != 0 && len(users) == 0 {
		users = []string{principalFrom(ctx).user.Name}
		if req.Msg.User != "" {
			users = []string{req.Msg.User}
		}
		final[users[0]] = settled(to, now)
	}
	slices.Sort(users)
	cur := b.s.cfg.Currency
	out := &hacv1.GetInvoiceResponse{}
	for _, name := range users {
		inv := meter.MakeInvoice(name, req.Msg.Month, final[name], byUser[name])
		pi := &hacv1.Invoice{User: inv.User, Month: inv.Month, Currency: cur.Code, Final: inv.Final, TotalMinor: inv.Total, Total: cur.Format(inv.Total)}
		for _, l := range inv.Lines {
			pi.Lines = append(pi.Lines, &hacv1.InvoiceLine{Kind: string(l.Kind), Item: l.Item, Server: l.Server, PerHourMinor: l.PerHour,
				PerHour: cur.Format(l.PerHour), Charged: l.Charged, HeldMs: l.HeldMS, GpuMs: l.GPUMS, ChargeMinor: l.Charge, Charge: cur.Format(l.Charge)})
		}
		out.Invoices = append(out.Invoices, pi)
	}
	return connect.NewResponse(out), nil
}

// displayZone names the operator's time zone.
func (s *Server) displayZone() string {
	if s.cfg.DisplayZone == nil {
		return "UTC"
	}
	return s.cfg.DisplayZone.String()
}

// settled reports whether nothing can change what was metered before to:
// it passed, and so did the time a node has to report a fault.
func settled(to, now time.Time) bool { return !to.Add(faultLate).After(now) }
