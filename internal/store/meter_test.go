package store

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/hac-project/hac/internal/meter"
)

// TestServersAreMeteredByState: a server made by hac is metered at the
// running price while it runs, at the stopped price while stopped, not
// while it is being made, failed or deleted; a registered one never.
func TestServersAreMeteredByState(t *testing.T) {
	s := open(t, Normal)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	err := s.Update(ctx, func(tx *Tx) error {
		uid, err := tx.CreateUser("alice", false, t0)
		if err != nil {
			return err
		}
		for _, p := range []meter.Price{{Kind: meter.KindServer, Item: "standard.2x4", PerHour: 100, From: t0}, {Kind: meter.KindStoppedServer, Item: "standard.2x4", PerHour: 10, From: t0}} {
			if err := tx.SetPrice(p, t0, uid); err != nil {
				return err
			}
		}
		if _, err := tx.CreateServer(Server{UserID: uid, Name: "mine", Model: "small.16gb", AcceleratorToken: "t1", CreatedAt: t0, Type: "standard.2x4"}); err != nil {
			return err
		}
		vmID, err := tx.CreateServer(Server{UserID: uid, Name: "vm", Model: "small.16gb", AcceleratorToken: "t2", CreatedAt: t0, Kind: KindVM, State: ServerCreating, Type: "standard.2x4"})
		if err != nil {
			return err
		}
		steps := []struct {
			state ServerState
			after time.Duration
		}{{ServerRunning, time.Minute}, {ServerRunning, time.Hour}, {ServerStopped, 2 * time.Hour}, {ServerError, 3 * time.Hour}, {ServerRunning, 4 * time.Hour}}
		for _, st := range steps {
			if err := tx.SetServerState(vmID, st.state, "", t0.Add(st.after)); err != nil {
				return err
			}
		}
		return tx.MarkServerDeleted(vmID, t0.Add(4*time.Hour+30*time.Minute))
	})
	if err != nil {
		t.Fatal(err)
	}
	var us []meter.Usage
	s.View(ctx, func(tx *Tx) (err error) {
		us, err = tx.Usage(UsageFilter{From: t0, To: t0.Add(24 * time.Hour)})
		return err
	})
	inv := meter.MakeInvoice("alice", "2026-12", true, us)
	// Running from 10:01 to 12:00 (1:59) and 14:00 to 14:30; stopped
	// 12:00 to 13:00; free while created, failed, deleted.
	want := map[meter.Kind]int64{meter.KindServer: (119 + 30) * 60_000, meter.KindStoppedServer: 60 * 60_000}
	got := map[meter.Kind]int64{}
	for _, l := range inv.Lines {
		got[l.Kind] += l.HeldMS
		if l.Server != "vm" {
			t.Errorf("line of server %q", l.Server)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("metered %v, want %v", got, want)
	}
	if inv.Total != 149*100/60+10+0 { // 248.33 rounds to 248; 10
		t.Fatalf("total %d: %+v", inv.Total, inv.Lines)
	}
}

// A million intervals for BenchmarkUsage, made once per run.
var (
	millionOnce sync.Once
	millionDB   *Store
	millionErr  error
)

const benchUsers, benchServersPerUser, benchIntervals = 100, 2, 1_000_000

// millionIntervals is a store of 100 users with 2 servers each, whose jobs
// held 1,000,000 intervals over 2026 (1 minute to 2 hours each, about
// half the servers' time), priced at two models with a change in July.
func millionIntervals(b *testing.B) *Store {
	millionOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hac-meter-bench")
		if err != nil {
			millionErr = err
			return
		}
		s, err := OpenSQLite(context.Background(), filepath.Join(dir, "hac.db"), Normal)
		if err != nil {
			millionErr = err
			return
		}
		millionDB = s
		year := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		r := rand.New(rand.NewPCG(1, 2))
		var servers []meterRecord
		millionErr = s.Update(context.Background(), func(tx *Tx) error {
			for u := range benchUsers {
				uid, err := tx.CreateUser(fmt.Sprintf("user%d", u), false, year)
				if err != nil {
					return err
				}
				for k := range benchServersPerUser {
					model := []string{"small.16gb", "xlarge.96gb"}[k]
					id, err := tx.CreateServer(Server{UserID: uid, Name: fmt.Sprintf("s%d", k), Model: model, AcceleratorToken: fmt.Sprintf("t%d-%d", u, k), CreatedAt: year})
					if err != nil {
						return err
					}
					servers = append(servers, meterRecord{userID: uid, serverID: id, kind: meter.KindModel, item: model, gpus: int64(1 + k)})
				}
			}
			for _, p := range []meter.Price{{Kind: meter.KindModel, Item: "small.16gb", PerHour: 120, From: year},
				{Kind: meter.KindModel, Item: "xlarge.96gb", PerHour: 720, From: year},
				{Kind: meter.KindModel, Item: "small.16gb", PerHour: 150, From: year.AddDate(0, 6, 0)}} {
				if err := tx.SetPrice(p, year, 1); err != nil {
					return err
				}
			}
			return nil
		})
		per := benchIntervals / len(servers)
		step := int64(365*24*time.Hour/time.Millisecond) / int64(per)
		for batch := 0; batch < per && millionErr == nil; batch += 1000 {
			millionErr = s.Update(context.Background(), func(tx *Tx) error {
				for i := batch; i < min(batch+1000, per); i++ {
					for _, srv := range servers {
						start := year.UnixMilli() + int64(i)*step + r.Int64N(step/4)
						end := start + 60_000 + r.Int64N(min(step/2, 2*3_600_000))
						res, err := tx.exec(`INSERT INTO meter_records (price_kind, user_id, server_id, item, start_ms, gpus) VALUES (?, ?, ?, ?, ?, ?)`,
							srv.kind, srv.userID, srv.serverID, srv.item, start, srv.gpus)
						if err != nil {
							return err
						}
						rec := srv
						rec.id, _ = res.LastInsertId()
						rec.startMS = start
						fault := ""
						if r.IntN(50) == 0 {
							fault = "node lost"
						}
						if err := tx.closeRecord(rec, time.UnixMilli(end), fault); err != nil {
							return err
						}
					}
				}
				return nil
			})
		}
	})
	if millionErr != nil {
		b.Fatal(millionErr)
	}
	return millionDB
}

// BenchmarkUsage is hac usage over 1,000,000 recorded intervals (SPEC P4
// goal: under 1 s): what GetUsage does, the store's query and the report,
// for an admin's and a user's common questions. The baseline reads the
// intervals' times alone, the least a report from the raw records would
// cost.
func BenchmarkUsage(b *testing.B) {
	s := millionIntervals(b)
	year := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nov := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		f    UsageFilter
		by   meter.By
	}{
		{"admin-month-by-day", UsageFilter{From: nov, To: nov.AddDate(0, 1, 0), Per: 24 * time.Hour}, meter.ByDay},
		{"admin-year-by-user", UsageFilter{From: year, To: year.AddDate(1, 0, 0)}, meter.ByUser},
		{"admin-year-by-month", UsageFilter{From: year, To: year.AddDate(1, 0, 0), Per: 24 * time.Hour}, meter.ByMonth},
		{"user-year-by-hour", UsageFilter{UserID: 7, From: year, To: year.AddDate(1, 0, 0), Per: time.Hour}, meter.ByHour},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				err := s.View(context.Background(), func(tx *Tx) error {
					us, err := tx.Usage(c.f)
					if err == nil && len(meter.Report(us, c.by)) == 0 {
						err = fmt.Errorf("an empty report")
					}
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("baseline-read-every-interval", func(b *testing.B) {
		for b.Loop() {
			err := s.View(context.Background(), func(tx *Tx) error {
				rows, err := tx.query(`SELECT start_ms, end_ms FROM meter_records`)
				if err != nil {
					return err
				}
				defer rows.Close()
				var n, a, e int64
				for rows.Next() {
					if err := rows.Scan(&a, &e); err != nil {
						return err
					}
					n++
				}
				if n < benchIntervals {
					return fmt.Errorf("%d intervals", n)
				}
				return rows.Err()
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestDaysAgreeWithHours: a report read from whole days (meter_days) and
// the edges' hours gives what the hours alone give, for random records
// and ranges.
func TestDaysAgreeWithHours(t *testing.T) {
	s := open(t, Normal)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(3, 4))
	err := s.Update(ctx, func(tx *Tx) error {
		uid, err := tx.CreateUser("alice", false, t0)
		if err != nil {
			return err
		}
		sid, err := tx.CreateServer(Server{UserID: uid, Name: "a", Model: "small.16gb", AcceleratorToken: "t", CreatedAt: t0})
		if err != nil {
			return err
		}
		for i := range 5 {
			if err := tx.SetPrice(meter.Price{Kind: meter.KindModel, Item: "small.16gb", PerHour: int64(100 * (i + 1)), From: t0.Add(time.Duration(i) * 97 * time.Hour)}, t0, uid); err != nil {
				return err
			}
		}
		for range 300 {
			start := t0.UnixMilli() + r.Int64N(20*24*3_600_000)
			res, err := tx.exec(`INSERT INTO meter_records (price_kind, user_id, server_id, item, start_ms, gpus) VALUES ('model', ?, ?, 'small.16gb', ?, 1)`, uid, sid, start)
			if err != nil {
				return err
			}
			id, _ := res.LastInsertId()
			rec := meterRecord{id: id, kind: meter.KindModel, userID: uid, serverID: sid, item: "small.16gb", startMS: start, gpus: 1}
			if err := tx.closeRecord(rec, time.UnixMilli(start+r.Int64N(50*3_600_000)), ""); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		from := t0.Add(time.Duration(r.Int64N(15*24)) * time.Hour)
		to := from.Add(time.Duration(1+r.Int64N(15*24)) * time.Hour)
		var mixed, hours []meter.Usage
		s.View(ctx, func(tx *Tx) (err error) {
			if mixed, err = tx.Usage(UsageFilter{From: from, To: to}); err != nil {
				return err
			}
			hours, err = tx.Usage(UsageFilter{From: from, To: to, Per: time.Hour})
			return err
		})
		a, b := meter.MakeInvoice("alice", "x", true, mixed), meter.MakeInvoice("alice", "x", true, hours)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("%v to %v: days and hours give\n%+v\n%+v", from, to, a, b)
		}
	}
}

// TestUpgradeMetersRunningJobs: a job that runs while the meter's
// migration is applied is metered from its grant, with its GPUs and
// nodes (a control plane keeps running jobs across the upgrade).
func TestUpgradeMetersRunningJobs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hac.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := fs.Sub(migrations, "migrations/sqlite")
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 7); err != nil {
		t.Fatal(err)
	}
	granted := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for _, q := range []string{
		`INSERT INTO users (id, name, created_at) VALUES (1, 'alice', 0)`,
		`INSERT INTO servers (id, user_id, name, model, accelerator_token, created_at) VALUES (1, 1, 'a', 'xlarge.96gb', 't', 0)`,
		fmt.Sprintf(`INSERT INTO jobs (id, server_id, user_id, model, memory_mib, priority, command, client_pid, state, submitted_at, allocated_at)
			VALUES (7, 1, 1, 'xlarge.96gb', 98304, 0, 'x', 1, 'running', 0, %d)`, granted.UnixNano()),
		`INSERT INTO placements (job_id, node_name, gpu_uuid, memory_mib) VALUES (7, 'gpu2', 'G2', 81920), (7, 'gpu1', 'G1', 16384)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(q, err)
		}
	}
	db.Close()
	s, err := OpenSQLite(ctx, path, Normal)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var open []OpenRecord
	s.View(ctx, func(tx *Tx) (err error) { open, err = tx.OpenRecords(0, granted.Add(time.Hour)); return err })
	if len(open) != 1 || open[0].JobID != 7 || open[0].GPUs != 2 || !open[0].Start.Equal(granted) || open[0].Item != "xlarge.96gb" {
		t.Fatalf("open records after the upgrade: %+v", open)
	}
	var nodes string
	s.View(ctx, func(tx *Tx) error {
		return tx.queryRow(`SELECT nodes FROM meter_records WHERE job_id = 7`).Scan(&nodes)
	})
	if nodes != "gpu2,gpu1" {
		t.Fatalf("nodes %q, want the placements' order", nodes)
	}
}
