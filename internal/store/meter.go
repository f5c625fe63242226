package store

import (
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hac-project/hac/internal/meter"
)

// The meter (SPEC P4): a record opens when a job is granted or a server
// made by hac runs or stops, and closes at the job's end or the server's
// next state, in the same transaction as the change it meters. Closing
// cuts the record into UTC hours at the prices in force (meter.Split) and
// adds them to meter_hours and, summed by day, to meter_days, which
// reports read. A price takes effect no earlier than the transaction that
// sets it, so that no closed record was priced without it.

// meterRecord is an open record.
type meterRecord struct {
	id, userID, serverID int64
	kind                 meter.Kind
	item                 string
	startMS, gpus        int64
}

// openJobRecord opens the record of job id, granted at at.
func (t *Tx) openJobRecord(id int64, at time.Time, ps []Placement) error {
	gpus, nodes := map[string]bool{}, []string{}
	var mem int64
	for _, p := range ps {
		gpus[p.GPU] = true
		mem += p.MemoryMiB
		if !slices.Contains(nodes, p.Node) {
			nodes = append(nodes, p.Node)
		}
	}
	_, err := t.exec(`INSERT INTO meter_records (price_kind, user_id, server_id, job_id, item, start_ms, gpus, memory_mib, nodes)
		SELECT ?, user_id, server_id, id, model, ?, ?, ?, ? FROM jobs WHERE id = ?`,
		meter.KindModel, meter.Millis(at), len(gpus), mem, strings.Join(nodes, ","), id)
	return err
}

// closeJobRecord closes job id's record at at; fault, when not empty,
// says which infrastructure fault ended it, and it is not charged.
// One statement finds and closes it: this runs with every job's end.
func (t *Tx) closeJobRecord(id int64, at time.Time, fault string) error {
	end := meter.Millis(at)
	r, ok, err := t.openRecord(t.queryRow(`UPDATE meter_records SET end_ms = ?, fault = ? WHERE job_id = ? AND end_ms IS NULL RETURNING `+recordColumns,
		end, fault, id))
	if err != nil || !ok {
		return err
	}
	if end < r.startMS { // a clock that went back: an empty interval
		return t.closeRecord(r, at, fault)
	}
	return t.addClosed(r, end, fault == "")
}

const recordColumns = `id, price_kind, user_id, server_id, item, start_ms, gpus`

func (t *Tx) openRecord(row *sql.Row) (meterRecord, bool, error) {
	var r meterRecord
	err := row.Scan(&r.id, &r.kind, &r.userID, &r.serverID, &r.item, &r.startMS, &r.gpus)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	return r, err == nil, err
}

func (t *Tx) closeRecord(r meterRecord, at time.Time, fault string) error {
	end := max(meter.Millis(at), r.startMS)
	if _, err := t.exec(`UPDATE meter_records SET end_ms = ?, fault = ? WHERE id = ?`, end, fault, r.id); err != nil {
		return fmt.Errorf("store: close meter record: %w", err)
	}
	return t.addClosed(r, end, fault == "")
}

// addClosed adds the hours of record r, closed at endMS, and tells the
// counters of them after the commit.
func (t *Tx) addClosed(r meterRecord, endMS int64, charged bool) error {
	pieces, err := t.addHours(r, endMS, charged, 1)
	for _, p := range pieces {
		t.metered = append(t.metered, Metered{Kind: r.kind, Item: r.item, PerHour: p.PerHour, Charged: charged, HeldMS: p.HeldMS, GPUMS: p.HeldMS * r.gpus})
	}
	return err
}

// Metered is a piece of a closed meter record: time of one item at one
// price.
type Metered struct {
	Kind    meter.Kind
	Item    string
	PerHour int64
	Charged bool
	HeldMS  int64
	GPUMS   int64
}

// ObserveMeter sets what is told, after each commit, of the meter pieces
// it closed (for counters); call it before any write.
func (s *Store) ObserveMeter(fn func([]Metered)) { s.metered = fn }

// addHours adds (sign 1) or takes back (sign -1) the hours of record r,
// held until endMS, as charged or not, and returns them.
func (t *Tx) addHours(r meterRecord, endMS int64, charged bool, sign int64) ([]meter.Piece, error) {
	s, err := t.schedule(r.kind, r.item)
	if err != nil {
		return nil, err
	}
	pieces := meter.Split(r.startMS, endMS, s)
	for _, p := range pieces {
		if err := t.addTo("meter_hours", "hour_ms", r, p, charged, sign); err != nil {
			return nil, err
		}
	}
	for _, p := range meter.SumByDay(pieces) {
		if err := t.addTo("meter_days", "day_ms", r, p, charged, sign); err != nil {
			return nil, err
		}
	}
	return pieces, nil
}

// addTo adds piece p of record r to a table of sums (meter_hours or
// meter_days), under its period's start.
func (t *Tx) addTo(table, period string, r meterRecord, p meter.Piece, charged bool, sign int64) error {
	if _, err := t.exec(`INSERT INTO `+table+` (`+period+`, user_id, server_id, price_kind, item, per_hour, charged, held_ms, gpu_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (`+period+`, user_id, server_id, price_kind, item, per_hour, charged)
		DO UPDATE SET held_ms = held_ms + excluded.held_ms, gpu_ms = gpu_ms + excluded.gpu_ms`,
		p.Hour.UnixMilli(), r.userID, r.serverID, r.kind, r.item, p.PerHour, charged, sign*p.HeldMS, sign*p.HeldMS*r.gpus); err != nil {
		return fmt.Errorf("store: %s: %w", table, err)
	}
	return nil
}

// MarkJobFault records that an infrastructure fault on node ended job id
// after its end was recorded as the client's (the node's word came
// second): its run is no longer charged, and the job's record says so. It
// changes nothing for a job whose program did not run on node (its first
// node), that ended before notBefore, or started before settledBefore (a
// month whose statement is final), or that is so marked already.
func (t *Tx) MarkJobFault(id int64, node, fault string, notBefore, settledBefore time.Time) (bool, error) {
	var r meterRecord
	var end int64
	var nodes string
	err := t.queryRow(`SELECT `+recordColumns+`, end_ms, nodes FROM meter_records WHERE job_id = ? AND end_ms >= ? AND start_ms >= ? AND fault = ''`,
		id, meter.Millis(notBefore), meter.Millis(settledBefore)).Scan(&r.id, &r.kind, &r.userID, &r.serverID, &r.item, &r.startMS, &r.gpus, &end, &nodes)
	first, _, _ := strings.Cut(nodes, ",")
	if errors.Is(err, sql.ErrNoRows) || (err == nil && first != node) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := t.exec(`UPDATE meter_records SET fault = ? WHERE id = ?`, fault, r.id); err != nil {
		return false, err
	}
	if _, err := t.exec(`UPDATE jobs SET state = ?, end_reason = ? WHERE id = ?`, JobLost, fault, id); err != nil {
		return false, err
	}
	// The counters heard of this time at its close: they are not told.
	if _, err := t.addHours(r, end, true, -1); err != nil {
		return false, err
	}
	_, err = t.addHours(r, end, false, 1)
	return err == nil, err
}

// serverPriceKind is the price a server pays in a state; ok is false for
// the states that are free (creating, error, deleting, deleted).
func serverPriceKind(state ServerState) (meter.Kind, bool) {
	switch state {
	case ServerRunning:
		return meter.KindServer, true
	case ServerStopped:
		return meter.KindStoppedServer, true
	}
	return "", false
}

// meterServer closes server id's open record and opens the one of its
// new state, at at; a server that is not made by hac is not metered.
func (t *Tx) meterServer(id int64, state ServerState, at time.Time) error {
	rec, open, err := t.openRecord(t.queryRow(`SELECT `+recordColumns+` FROM meter_records WHERE server_id = ? AND end_ms IS NULL AND job_id IS NULL`, id))
	if err != nil {
		return err
	}
	kind, billable := serverPriceKind(state)
	if open && billable && rec.kind == kind {
		return nil // the same price goes on
	}
	if open {
		if err := t.closeRecord(rec, at, ""); err != nil {
			return err
		}
	}
	if !billable {
		return nil
	}
	_, err = t.exec(`INSERT INTO meter_records (price_kind, user_id, server_id, item, start_ms)
		SELECT ?, user_id, id, server_type, ? FROM servers WHERE id = ? AND kind = ?`, kind, meter.Millis(at), id, KindVM)
	return err
}

// priceCache keeps the schedules the store's writer read, until a
// transaction sets a price: every job's end prices its record.
type priceCache struct {
	mu sync.Mutex
	m  map[[2]string]meter.Schedule
}

// schedule is the prices of one item: from the writer's cache unless the
// transaction set a price.
func (t *Tx) schedule(kind meter.Kind, item string) (meter.Schedule, error) {
	key := [2]string{string(kind), item}
	cache := t.prices
	if t.pricesWritten {
		cache = nil
	}
	if cache != nil {
		cache.mu.Lock()
		s, ok := cache.m[key]
		cache.mu.Unlock()
		if ok {
			return s, nil
		}
	}
	s, err := t.readSchedule(kind, item)
	if err == nil && cache != nil {
		cache.mu.Lock()
		cache.m[key] = s
		cache.mu.Unlock()
	}
	return s, err
}

func (t *Tx) readSchedule(kind meter.Kind, item string) (meter.Schedule, error) {
	rows, err := t.query(`SELECT per_hour, effective_from FROM prices WHERE price_kind = ? AND item = ? ORDER BY effective_from`, kind, item)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var s meter.Schedule
	for rows.Next() {
		p := meter.Price{Kind: kind, Item: item}
		var from int64
		if err := rows.Scan(&p.PerHour, &from); err != nil {
			return nil, err
		}
		p.From = time.Unix(0, from)
		s = append(s, p)
	}
	return s, rows.Err()
}

// PriceEntry is a price as set, by whom and when.
type PriceEntry struct {
	meter.Price
	SetAt time.Time
	SetBy string
}

// ErrPastPrice refuses a price that would take effect before it is set.
var ErrPastPrice = errors.New("store: a price cannot take effect in the past")

// ErrFarPrice refuses a price from MaxPriceFrom on: its time would not
// fit the nanoseconds it is stored in.
var ErrFarPrice = errors.New("store: a price takes effect before 2200")

// MaxPriceFrom bounds when a price can take effect.
var MaxPriceFrom = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// SetPrice records a price, in force from p.From, which must not be
// before now: what is metered is never priced again. A price set again
// for the same item and time replaces it.
func (t *Tx) SetPrice(p meter.Price, now time.Time, by int64) error {
	if p.From.Before(now) {
		return ErrPastPrice
	}
	if !p.From.Before(MaxPriceFrom) {
		return fmt.Errorf("store: a price from %v: %w", p.From, ErrFarPrice)
	}
	// This transaction reads prices afresh from here on, and the cache
	// is emptied now, before the commit: the next writer may start the
	// moment it returns.
	t.pricesWritten = true
	if t.prices != nil {
		t.prices.mu.Lock()
		clear(t.prices.m)
		t.prices.mu.Unlock()
	}
	_, err := t.exec(`INSERT INTO prices (price_kind, item, per_hour, effective_from, set_at, set_by) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (price_kind, item, effective_from) DO UPDATE SET per_hour = excluded.per_hour, set_at = excluded.set_at, set_by = excluded.set_by`,
		p.Kind, p.Item, p.PerHour, nanos(p.From), nanos(now), by)
	return err
}

// Prices returns every price ever set, by kind, item and time.
func (t *Tx) Prices() ([]PriceEntry, error) {
	rows, err := t.query(`SELECT p.price_kind, p.item, p.per_hour, p.effective_from, p.set_at, u.name FROM prices p JOIN users u ON u.id = p.set_by
		ORDER BY p.price_kind, p.item, p.effective_from`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PriceEntry
	for rows.Next() {
		var e PriceEntry
		var from, at int64
		if err := rows.Scan(&e.Kind, &e.Item, &e.PerHour, &from, &at, &e.SetBy); err != nil {
			return nil, err
		}
		e.From, e.SetAt = time.Unix(0, from), time.Unix(0, at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// UsageFilter selects metered time: of one user (all when UserID is 0),
// in the hours from From up to To.
type UsageFilter struct {
	UserID   int64
	From, To time.Time
	// Per is the finest time a report needs: an hour, a day, or 0 for
	// none (the hours of each group are summed).
	Per time.Duration
}

// Usage returns the closed records' time that f selects, summed per
// f.Per (the Hour of each sum is its period's start). Whole days come from
// meter_days unless f.Per is an hour, the rest from meter_hours.
func (t *Tx) Usage(f UsageFilter) ([]meter.Usage, error) {
	const day = 24 * time.Hour
	firstDay := f.From.Truncate(day)
	if firstDay.Before(f.From) {
		firstDay = firstDay.Add(day)
	}
	lastDay := f.To.Truncate(day)
	if f.Per == time.Hour || !firstDay.Before(lastDay) {
		return t.usageIn("meter_hours", "hour_ms", f.From, f.To, f)
	}
	var out []meter.Usage
	for _, part := range []struct {
		table, period string
		from, to      time.Time
	}{{"meter_hours", "hour_ms", f.From, firstDay}, {"meter_days", "day_ms", firstDay, lastDay}, {"meter_hours", "hour_ms", lastDay, f.To}} {
		if !part.from.Before(part.to) {
			continue
		}
		us, err := t.usageIn(part.table, part.period, part.from, part.to, f)
		if err != nil {
			return nil, err
		}
		out = append(out, us...)
	}
	return out, nil
}

// usageIn sums one table's rows in [from, to) as f says.
func (t *Tx) usageIn(table, period string, from, to time.Time, f UsageFilter) ([]meter.Usage, error) {
	group := "0"
	switch f.Per {
	case time.Hour:
		group = "h." + period
	case 24 * time.Hour:
		group = "h." + period + " - h." + period + " % 86400000"
	}
	rows, err := t.queryOnce(`SELECT `+group+` AS period, u.name, s.name, h.price_kind, h.item, h.per_hour, h.charged,
		SUM(h.held_ms), SUM(h.gpu_ms)
		FROM `+table+` h JOIN users u ON u.id = h.user_id JOIN servers s ON s.id = h.server_id
		WHERE h.`+period+` >= ? AND h.`+period+` < ? AND (? = 0 OR h.user_id = ?)
		GROUP BY period, h.user_id, h.server_id, h.price_kind, h.item, h.per_hour, h.charged
		HAVING SUM(h.held_ms) != 0`,
		meter.Millis(from), meter.Millis(to), f.UserID, f.UserID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []meter.Usage
	for rows.Next() {
		var u meter.Usage
		var at int64
		if err := rows.Scan(&at, &u.User, &u.Server, &u.Kind, &u.Item, &u.PerHour, &u.Charged, &u.HeldMS, &u.GPUMS); err != nil {
			return nil, err
		}
		u.Hour, u.Server = time.UnixMilli(at).UTC(), shownServerName(u.Server)
		out = append(out, u)
	}
	return out, rows.Err()
}

// shownServerName is a server's name as reports show it: the name it was
// made with, also once deleted (deletion renames it, to free the name), so
// that a statement reads the same before and after.
func shownServerName(name string) string {
	name, _, _ = strings.Cut(name, "~deleted~")
	return name
}

// OpenRecord is a record that has not closed: a running job, a server that
// exists.
type OpenRecord struct {
	Kind               meter.Kind
	User, Server, Item string
	JobID, GPUs        int64
	Start              time.Time
	Schedule           meter.Schedule
}

// OpenRecords returns the open records of one user (all when userID is
// 0) that started before to, with their prices.
func (t *Tx) OpenRecords(userID int64, to time.Time) ([]OpenRecord, error) {
	rows, err := t.query(`SELECT r.price_kind, u.name, s.name, r.item, COALESCE(r.job_id, 0), r.gpus, r.start_ms
		FROM meter_records r JOIN users u ON u.id = r.user_id JOIN servers s ON s.id = r.server_id
		WHERE r.end_ms IS NULL AND r.start_ms < ? AND (? = 0 OR r.user_id = ?) ORDER BY r.id`, meter.Millis(to), userID, userID)
	if err != nil {
		return nil, err
	}
	var out []OpenRecord
	for rows.Next() {
		var r OpenRecord
		var start int64
		if err := rows.Scan(&r.Kind, &r.User, &r.Server, &r.Item, &r.JobID, &r.GPUs, &start); err != nil {
			rows.Close()
			return nil, err
		}
		r.Server, r.Start = shownServerName(r.Server), time.UnixMilli(start)
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	schedules := map[[2]string]meter.Schedule{}
	for i, r := range out {
		k := [2]string{string(r.Kind), r.Item}
		s, ok := schedules[k]
		if !ok {
			if s, err = t.schedule(r.Kind, r.Item); err != nil {
				return nil, err
			}
			schedules[k] = s
		}
		out[i].Schedule = s
	}
	return out, nil
}

// Setting returns a setting's value, or ErrNotFound.
func (t *Tx) Setting(name string) (string, error) {
	var v string
	err := t.queryRow(`SELECT value FROM settings WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return v, err
}

// SetSetting records a setting.
func (t *Tx) SetSetting(name, value string) error {
	_, err := t.exec(`INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, value)
	return err
}
