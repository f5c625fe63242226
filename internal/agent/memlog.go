package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"sync"
)

// jobOutput is where a job's output is kept while it runs: a file log
// (outputLog) for a detached job, whose output is all there is of it, or
// a memory ring (memLog) for an attached run, whose output reaches its
// client's terminal anyway: copying it to the disk as it comes cost a
// third of hac run's output rate (BENCHMARKS.md (d)).
type jobOutput interface {
	writer(stream byte) io.Writer
	reader() outputReader
	// dropped is how many bytes of the output's start are no longer kept.
	dropped() int64
	close()
	// written reports whether any output came.
	written() bool
}

// outputReader reads a jobOutput's records in order, from its oldest kept.
type outputReader interface {
	// next returns the next record; with nothing more, io.EOF once the
	// output is closed, else a channel to wait on.
	next() (stream byte, data []byte, wait <-chan struct{}, err error)
	// gone is how many bytes of the output's start were no longer kept
	// when the reader began (what it skipped after is skipped's).
	gone() int64
	// skipped returns how many bytes the reader passed unread since the
	// last call: dropped by the log before the reader came to them.
	skipped() int64
	// pause lets go of what the reader holds while a message is on its way.
	pause()
	close()
}

// DefaultRunOutputBytes is how much of an attached run's output its node
// keeps, in memory while it runs and on disk after.
const DefaultRunOutputBytes = 1 << 20

// memLog keeps the last limit bytes of an attached run's output in
// memory, as records. Their bytes live in chunks of memChunk bytes, filled
// in order and reused once their records are dropped, so that a write
// costs one copy and no allocation (it is on every attached run's output
// path: BENCHMARKS.md (d)); readers copy what they read.
type memLog struct {
	limit int64

	mu      sync.Mutex
	recs    []memRecord // oldest first
	first   uint64      // the sequence number of recs[0]
	bytes   int64
	drop    int64
	gone    int64 // bytes of the records dropped from the front
	closed  bool
	changed chan struct{}
	watched bool // a reader waits on changed: the next write closes it
	// cur is the chunk being filled; free holds chunks to reuse.
	cur  []byte
	free [][]byte
}

type memRecord struct {
	stream byte
	data   []byte // in a chunk
	// chunk is set on the last record of a chunk no longer filled:
	// dropping the record frees it.
	chunk []byte
}

// memChunk is the size of a memLog's chunks: a record at most.
const memChunk = maxRecord

func newMemLog(limit int64) *memLog {
	return &memLog{limit: max(limit, maxRecord), changed: make(chan struct{})}
}

func (l *memLog) writer(stream byte) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		l.write(stream, p)
		return len(p), nil
	})
}

// room returns n bytes of chunk for a record, moving to another chunk when
// the current one is full.
func (l *memLog) room(n int) []byte {
	if cap(l.cur)-len(l.cur) < n {
		if len(l.recs) > 0 {
			l.recs[len(l.recs)-1].chunk = l.cur[:0]
		}
		if k := len(l.free); k > 0 {
			l.cur, l.free = l.free[k-1][:0], l.free[:k-1]
		} else {
			l.cur = make([]byte, 0, memChunk)
		}
	}
	start := len(l.cur)
	l.cur = l.cur[:start+n]
	return l.cur[start : start+n : start+n]
}

func (l *memLog) write(stream byte, p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.drop += int64(len(p))
		return
	}
	for len(p) > 0 {
		n := min(len(p), maxRecord)
		data := l.room(n)
		copy(data, p[:n])
		l.recs = append(l.recs, memRecord{stream: stream, data: data})
		l.bytes += int64(n)
		p = p[n:]
	}
	for l.bytes > l.limit {
		old := l.recs[0]
		l.recs[0] = memRecord{}
		l.recs = l.recs[1:]
		l.first++
		l.bytes -= int64(len(old.data))
		l.drop += int64(len(old.data))
		l.gone += int64(len(old.data))
		if old.chunk != nil {
			l.free = append(l.free, old.chunk)
		}
	}
	if l.watched {
		close(l.changed)
		l.changed, l.watched = make(chan struct{}), false
	}
}

func (l *memLog) dropped() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.drop
}

func (l *memLog) written() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs) > 0 || l.drop > 0
}

func (l *memLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.changed)
	}
}

// save writes what the log keeps as an outputLog's file in dir, for the
// readers after the run (and after an agent restart).
func (l *memLog) save(dir string) error {
	l.mu.Lock() // held: the records' chunks are reused by writes
	defer l.mu.Unlock()
	recs := l.recs
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(outputFile(dir, 1), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 256<<10)
	for _, r := range recs {
		var h [recordHeader]byte
		h[0] = r.stream
		binary.BigEndian.PutUint32(h[1:], uint32(len(r.data)))
		w.Write(h[:])
		w.Write(r.data)
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (l *memLog) reader() outputReader {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &memReader{l: l, seq: l.first, readPlace: newReadPlace(l.gone)}
}

// readPlace is where a reader is in the output, counted in the output's
// bytes, and what it passed unread: both logs' readers keep one.
type readPlace struct {
	pos   int64 // the output's bytes before the next record
	begin int64 // pos when the reader began
	skip  int64 // passed unread since skipped was last called
}

func newReadPlace(at int64) readPlace { return readPlace{pos: at, begin: at} }

func (p *readPlace) gone() int64 { return p.begin }

// skipTo moves the reader to at, past what it did not read.
func (p *readPlace) skipTo(at int64) {
	if at > p.pos {
		p.skip += at - p.pos
		p.pos = at
	}
}

func (p *readPlace) skipped() int64 {
	n := p.skip
	p.skip = 0
	return n
}

// memReader reads a memLog by sequence number; records dropped before it
// read them are skipped, and counted.
type memReader struct {
	l   *memLog
	seq uint64
	readPlace
}

func (r *memReader) next() (byte, []byte, <-chan struct{}, error) {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.seq < l.first {
		r.skipTo(l.gone)
		r.seq = l.first
	}
	if i := r.seq - l.first; i < uint64(len(l.recs)) {
		r.seq++
		rec := l.recs[i]
		r.pos += int64(len(rec.data))
		return rec.stream, bytes.Clone(rec.data), nil, nil // its chunk is reused
	}
	if l.closed {
		return 0, nil, nil, io.EOF
	}
	l.watched = true
	return 0, nil, l.changed, nil
}

func (r *memReader) pause() {}
func (r *memReader) close() {}
