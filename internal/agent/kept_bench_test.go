package agent

import (
	"log/slog"
	"testing"
	"time"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// BenchmarkKeptRecord is what keeping an attached run's output costs a
// job: the record's folder and log, its end (off the client's wait).
func BenchmarkKeptRecord(b *testing.B) {
	a := &Agent{cfg: Config{DataDir: b.TempDir(), JobOutputBytes: DefaultJobOutputBytes}, kept: map[int64]*keptJob{}, log: slog.Default()}
	for i := range b.N {
		k, err := a.keep(&jobRun{id: int64(i + 1)}, 1, false, false)
		if err != nil {
			b.Fatal(err)
		}
		if err := k.begin(&hacv1.Manifest{}, a.cfg.JobOutputBytes, DefaultRunOutputBytes); err != nil {
			b.Fatal(err)
		}
		k.ended(keptEnd{At: time.Now()})
	}
}
