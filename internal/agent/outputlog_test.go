package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readAll reads a log from its oldest kept record on, without waiting.
func readAll(t *testing.T, l jobOutput) (stdout, stderr string, closed bool) {
	t.Helper()
	r := l.reader()
	defer r.close()
	var out, errb bytes.Buffer
	for {
		stream, data, wait, err := r.next()
		if err == io.EOF {
			return out.String(), errb.String(), true
		}
		if err != nil {
			t.Fatal(err)
		}
		if wait != nil {
			return out.String(), errb.String(), false
		}
		if stream == streamStderr {
			errb.Write(data)
		} else {
			out.Write(data)
		}
	}
}

// TestOutputLogKeepsTheLastPart: the log keeps stdout and stderr apart,
// keeps the newest output within its bound as it grows past it, counts
// what it dropped, wakes a follower at each write and at the end, and
// reads back the same after an agent restart.
func TestOutputLogKeepsTheLastPart(t *testing.T) {
	dir := t.TempDir()
	const limit = 4 * (recordHeader + maxRecord)
	l := newOutputLog(filepath.Join(dir, "log"), limit)
	if out, _, closed := readAll(t, l); out != "" || closed {
		t.Fatalf("an empty log reads %q, closed %v", out, closed)
	}
	if _, err := os.Stat(filepath.Join(dir, "log")); !os.IsNotExist(err) {
		t.Fatalf("a log with nothing written made its folder: %v", err)
	}
	l.writer(streamStdout).Write([]byte("out\n"))
	l.writer(streamStderr).Write([]byte("err\n"))
	if out, errs, closed := readAll(t, l); out != "out\n" || errs != "err\n" || closed {
		t.Fatalf("read %q %q closed %v", out, errs, closed)
	}

	// A follower waits, and wakes at a write.
	r := l.reader()
	defer r.close()
	for {
		_, _, wait, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if wait != nil {
			go l.writer(streamStdout).Write([]byte("more\n"))
			select {
			case <-wait:
			case <-time.After(10 * time.Second):
				t.Fatal("a write did not wake the follower")
			}
			break
		}
	}
	if _, data, _, err := r.next(); err != nil || string(data) != "more\n" {
		t.Fatalf("after waking: %q, %v", data, err)
	}

	// Far past the bound: only the newest output stays, in order.
	var all bytes.Buffer
	for i := range 20000 {
		line := fmt.Sprintf("line %05d\n", i)
		all.WriteString(line)
		l.writer(streamStdout).Write([]byte(line))
	}
	out, _, _ := readAll(t, l)
	if int64(len(out)) > limit || len(out) < limit/4 || !bytes.HasSuffix(all.Bytes(), []byte(out)) {
		t.Fatalf("kept %d bytes (bound %d); a suffix of what was written: %v", len(out), limit, bytes.HasSuffix(all.Bytes(), []byte(out)))
	}
	_, _, dropped, _, _ := l.state()
	if want := int64(len("out\nerr\nmore\n")+all.Len()) - int64(len(out)); dropped != want {
		t.Errorf("dropped %d bytes, want %d", dropped, want)
	}

	// The end wakes followers and ends their read.
	_, _, _, _, changed := l.state()
	l.close()
	select {
	case <-changed:
	default:
		t.Fatal("closing did not wake followers")
	}
	if _, _, closed := readAll(t, l); !closed {
		t.Fatal("the closed log reads on")
	}
	again := openOutputLog(filepath.Join(dir, "log"), dropped)
	if got, _, closed := readAll(t, again); got != out || !closed {
		t.Fatalf("after a restart: %d bytes (want %d), closed %v", len(got), len(out), closed)
	}
}

// TestMemLogKeepsTheLastPart: an attached run's output is kept in memory,
// its last part, streams apart; a follower wakes at each write and at
// the end; saved, it reads back as the file log does.
func TestMemLogKeepsTheLastPart(t *testing.T) {
	l := newMemLog(4 * maxRecord)
	r := l.reader()
	if _, _, wait, err := r.next(); wait == nil || err != nil {
		t.Fatalf("an empty log: %v, %v", wait, err)
	}
	var all bytes.Buffer
	for i := range 50000 {
		line := fmt.Sprintf("line %05d\n", i)
		all.WriteString(line)
		l.writer(streamStdout).Write([]byte(line))
	}
	l.writer(streamStderr).Write([]byte("err\n"))
	var out, errs bytes.Buffer
	for {
		stream, data, wait, err := r.next()
		if err != nil || wait != nil {
			break
		}
		if stream == streamStderr {
			errs.Write(data)
		} else {
			out.Write(data)
		}
	}
	if out.Len() > 4*maxRecord || !bytes.HasSuffix(all.Bytes(), out.Bytes()) || errs.String() != "err\n" {
		t.Fatalf("kept %d bytes, a suffix: %v, stderr %q", out.Len(), bytes.HasSuffix(all.Bytes(), out.Bytes()), errs.String())
	}
	if want := int64(all.Len() - out.Len()); l.dropped() != want {
		t.Errorf("dropped %d, want %d", l.dropped(), want)
	}
	dir := filepath.Join(t.TempDir(), "rec")
	if err := l.save(dir); err != nil {
		t.Fatal(err)
	}
	l.close()
	if _, _, _, err := r.next(); err != io.EOF {
		t.Fatalf("after close: %v", err)
	}
	got, gotErr, closed := readAll(t, openOutputLog(dir, l.dropped()))
	if got != out.String() || gotErr != "err\n" || !closed {
		t.Fatalf("saved: %d bytes (want %d), %q, closed %v", len(got), out.Len(), gotErr, closed)
	}
}

// TestSlowReaderCountsWhatItMissed: a reader that falls behind while the
// log drops its oldest part is told how much went by unread, where it did:
// what it read, what it was told it skipped and what was gone before it
// came add up to all that was written, in order. For both logs, with the
// file log's reader paused (its file closed) as a stream's is while a
// message is on its way, and kept open.
func TestSlowReaderCountsWhatItMissed(t *testing.T) {
	const limit = 4 * (recordHeader + maxRecord)
	for name, newLog := range map[string]func() jobOutput{
		"file": func() jobOutput { return newOutputLog(filepath.Join(t.TempDir(), "log"), limit) },
		"mem":  func() jobOutput { return newMemLog(limit) },
	} {
		for _, pause := range []bool{true, false} {
			l := newLog()
			var all bytes.Buffer
			write := func(n int) {
				for range n {
					line := fmt.Sprintf("line %07d\n", all.Len())
					all.WriteString(line)
					l.writer(streamStdout).Write([]byte(line))
				}
			}
			write(1000)
			r := l.reader()
			var read bytes.Buffer
			var skipped int64
			for round := range 20 {
				// A few records, then the writer runs far ahead.
				for range 3 {
					_, data, wait, err := r.next()
					if err != nil || wait != nil {
						break
					}
					if s := r.skipped(); s > 0 {
						if int64(read.Len())+s > int64(all.Len()) {
							t.Fatalf("%s: skipped %d past what was written", name, s)
						}
						skipped += s
						read.WriteString(strings.Repeat("?", int(s)))
					}
					read.Write(data)
				}
				if pause {
					r.pause()
				}
				write(round * 300)
			}
			l.close()
			for {
				_, data, _, err := r.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if s := r.skipped(); s > 0 {
					skipped += s
					read.WriteString(strings.Repeat("?", int(s)))
				}
				read.Write(data)
			}
			r.close()
			if skipped == 0 {
				t.Fatalf("%s pause %v: a reader far behind skipped nothing", name, pause)
			}
			// Each line read sits where it was written: the skips are
			// said where they happened.
			got, want := read.Bytes(), all.Bytes()
			if len(got) != len(want) {
				t.Fatalf("%s pause %v: read %d + skipped %d = %d, written %d", name, pause, read.Len()-int(skipped), skipped, len(got), len(want))
			}
			for i := range got {
				if got[i] != '?' && got[i] != want[i] {
					t.Fatalf("%s pause %v: byte %d is %q, written %q", name, pause, i, got[i], want[i])
				}
			}
		}
	}
}

// TestReaderCountsEachDropOnce: what was gone before a reader began
// (Dropped) and what it skipped after (Skipped) are told apart, each byte
// once, also when the log drops more between the reader's start and its
// first read.
func TestReaderCountsEachDropOnce(t *testing.T) {
	const limit = 4 * (recordHeader + maxRecord)
	for name, l := range map[string]jobOutput{
		"file": newOutputLog(filepath.Join(t.TempDir(), "log"), limit),
		"mem":  newMemLog(limit),
	} {
		chunk := bytes.Repeat([]byte("x"), maxRecord)
		var written, read, skipped int64
		for range 6 {
			l.writer(streamStdout).Write(chunk)
			written += maxRecord
		}
		r := l.reader()
		for range 6 {
			l.writer(streamStdout).Write(chunk)
			written += maxRecord
		}
		l.close()
		for {
			_, d, _, err := r.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			skipped += r.skipped()
			read += int64(len(d))
		}
		if r.gone()+skipped+read != written || r.gone() == 0 || skipped == 0 {
			t.Errorf("%s: gone %d + skipped %d + read %d, written %d", name, r.gone(), skipped, read, written)
		}
	}
}
