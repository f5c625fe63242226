package agent

import "testing"

// BenchmarkMemLogWrite is an attached run's output kept as it goes: 32 KiB
// writes (a pipe's read) into the 1 MiB a node keeps, far past its bound.
func BenchmarkMemLogWrite(b *testing.B) {
	l := newMemLog(DefaultRunOutputBytes)
	w := l.writer(streamStdout)
	p := make([]byte, 32<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		w.Write(p)
	}
}
