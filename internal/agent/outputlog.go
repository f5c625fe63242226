package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// outputLog keeps the last part of a detached job's output (and an
// attached run's, after its end): its newest
// bytes, up to a bound, in two files of at most half the bound each.
// Writes go to the newer file; once it is full it becomes the older one
// (the older is removed) and a new one starts. Records are framed: one
// byte (1 stdout, 2 stderr), a big-endian uint32 length, the data, so that
// the two streams stay apart. Readers read the files directly, up to the
// size the writer published: they never see half a record.
type outputLog struct {
	dir  string
	half int64 // the bound on each file

	mu      sync.Mutex
	cur     *os.File // nil until the first write, and once closed
	closed  bool
	gen     int   // the newer file is output.GEN, the older output.GEN-1
	size    int64 // of the newer file
	prevLen int64 // payload bytes of the older file
	curLen  int64 // payload bytes of the newer file
	drop    int64 // payload bytes no longer kept
	rotated int64 // payload bytes of the files removed: the older file starts there
	// changed is closed (and replaced) at every write and at close:
	// followers wait on it.
	changed chan struct{}
	failed  error // the first write error: the rest of the output is lost
}

const (
	recordHeader = 5
	maxRecord    = 64 << 10
	streamStdout = 1
	streamStderr = 2
)

func outputFile(dir string, gen int) string {
	return filepath.Join(dir, "output."+strconv.Itoa(gen))
}

// newOutputLog starts an empty log in dir, bounded to limit bytes. Its
// folder and first file are made at its first write: a program that
// writes nothing costs no file (creating one is half a millisecond here,
// on every run's way).
func newOutputLog(dir string, limit int64) *outputLog {
	return &outputLog{dir: dir, half: max(limit/2, recordHeader+maxRecord), gen: 1, changed: make(chan struct{})}
}

// openOutputLog reads back the closed log of an ended job (after an agent
// restart): its files and how much was dropped.
func openOutputLog(dir string, dropped int64) *outputLog {
	l := &outputLog{dir: dir, drop: dropped, rotated: dropped, changed: make(chan struct{}), closed: true}
	close(l.changed)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if g, ok := strings.CutPrefix(e.Name(), "output."); ok {
			if n, err := strconv.Atoi(g); err == nil {
				l.gen = max(l.gen, n)
			}
		}
	}
	if fi, err := os.Stat(outputFile(dir, l.gen)); err == nil {
		l.size = fi.Size()
	}
	return l
}

// writer returns an io.Writer for one of the streams. Writes never fail:
// a program is not stopped because its node's disk is full; what it
// writes then is lost, and Output says so.
func (l *outputLog) writer(stream byte) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		l.write(stream, p)
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (l *outputLog) write(stream byte, p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.failed != nil {
		l.drop += int64(len(p))
		return
	}
	if l.cur == nil {
		f, err := l.create(l.gen)
		if err != nil {
			l.failed = err
			l.drop += int64(len(p))
			return
		}
		l.cur = f
	}
	for len(p) > 0 {
		n := min(len(p), maxRecord)
		if l.size > 0 && l.size+recordHeader+int64(n) > l.half {
			if err := l.rotateLocked(); err != nil {
				l.failed = err
				l.drop += int64(len(p))
				break
			}
		}
		rec := make([]byte, recordHeader, recordHeader+n)
		rec[0] = stream
		binary.BigEndian.PutUint32(rec[1:], uint32(n))
		rec = append(rec, p[:n]...)
		if _, err := l.cur.Write(rec); err != nil {
			l.failed = err
			l.drop += int64(len(p))
			break
		}
		l.size += int64(len(rec))
		l.curLen += int64(n)
		p = p[n:]
	}
	l.notifyLocked()
}

func (l *outputLog) create(gen int) (*os.File, error) {
	if gen == 1 {
		if err := os.MkdirAll(l.dir, 0o700); err != nil {
			return nil, err
		}
	}
	return os.OpenFile(outputFile(l.dir, gen), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
}

// written reports whether the log has a file on disk.
func (l *outputLog) written() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur != nil || l.size > 0 || l.gen > 1
}

func (l *outputLog) rotateLocked() error {
	f, err := l.create(l.gen + 1)
	if err != nil {
		return err
	}
	l.cur.Close()
	os.Remove(outputFile(l.dir, l.gen-1)) // a reader that has it open reads on
	l.drop += l.prevLen
	l.rotated += l.prevLen
	l.prevLen, l.curLen = l.curLen, 0
	l.cur, l.gen, l.size = f, l.gen+1, 0
	return nil
}

func (l *outputLog) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// close ends the log: followers read what is left and stop.
func (l *outputLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if l.cur != nil {
		l.cur.Close()
	}
	close(l.changed)
}

// state is what a reader needs: the newer file, its published size, how
// much was dropped, whether the log is closed, and what to wait on.
func (l *outputLog) state() (gen int, size, dropped int64, closed bool, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen, l.size, l.drop, l.closed, l.changed
}

// start is where file g's payload starts in the output (g is the newer
// file or the older).
func (l *outputLog) start(g int) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g >= l.gen {
		return l.rotated + l.prevLen
	}
	return l.rotated
}

// logReader reads an outputLog from its oldest kept record on.
type logReader struct {
	l   *outputLog
	gen int
	f   *os.File
	off int64
	// paused: f was closed at off (pause), to be opened again there.
	paused bool
	readPlace
}

func (l *outputLog) reader() outputReader {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &logReader{l: l, gen: max(l.gen-1, 1), readPlace: newReadPlace(l.rotated)}
}

func (l *outputLog) dropped() int64 {
	_, _, d, _, _ := l.state()
	return d
}

// next returns the next record: its stream and data. With nothing more to
// read it returns io.EOF when the log is closed, else a channel to wait on
// for more.
func (r *logReader) next() (stream byte, data []byte, wait <-chan struct{}, err error) {
	for {
		gen, size, _, closed, changed := r.l.state()
		if r.f == nil {
			f, err := os.Open(outputFile(r.l.dir, r.gen))
			if errors.Is(err, os.ErrNotExist) && r.gen < gen {
				// Rotated away before it was opened: on with the oldest
				// kept; what the reader had not read of it is skipped.
				r.gen, r.off, r.paused = max(gen-1, r.gen+1), 0, false
				r.skipTo(r.l.start(r.gen))
				continue
			}
			if errors.Is(err, os.ErrNotExist) && r.gen == gen && size == 0 {
				// Nothing written yet.
				if closed {
					return 0, nil, nil, io.EOF
				}
				return 0, nil, changed, nil
			}
			if err != nil {
				return 0, nil, nil, err
			}
			r.f = f
			if !r.paused {
				r.off = 0
			}
			r.paused = false
		}
		limit := size // published size of the newer file
		if r.gen < gen {
			fi, err := r.f.Stat()
			if err != nil {
				return 0, nil, nil, err
			}
			limit = fi.Size() // an older file no longer grows
		}
		if r.off+recordHeader <= limit {
			var h [recordHeader]byte
			if _, err := r.f.ReadAt(h[:], r.off); err != nil {
				return 0, nil, nil, fmt.Errorf("read the output: %w", err)
			}
			n := int64(binary.BigEndian.Uint32(h[1:]))
			if n > maxRecord || r.off+recordHeader+n > limit {
				if closed && r.gen == gen {
					return 0, nil, nil, io.EOF // a record cut short at the end (a full disk, a crash)
				}
				return 0, nil, nil, errors.New("the output's record is damaged")
			}
			data := make([]byte, n)
			if _, err := r.f.ReadAt(data, r.off+recordHeader); err != nil {
				return 0, nil, nil, fmt.Errorf("read the output: %w", err)
			}
			r.off += recordHeader + n
			r.pos += n
			return h[0], data, nil, nil
		}
		if r.gen < gen {
			r.f.Close()
			r.f, r.gen = nil, r.gen+1 // gone if the writer rotated past it: skipped
			continue
		}
		if closed {
			return 0, nil, nil, io.EOF
		}
		return 0, nil, changed, nil
	}
}

// pause closes the reader's file; next opens it again where it was, or,
// if the writer rotated it away meanwhile, the oldest file kept.
func (r *logReader) pause() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
		r.paused = true
	}
}

func (r *logReader) close() { r.pause() }
