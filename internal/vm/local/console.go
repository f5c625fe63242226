package local

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// A server's console (its init's stdout and stderr) goes through a pipe
// to a logger process of its own, the hac binary started as
// hac-console-log, in a session of its own so that it outlives a restart
// of hac serve, as conmon does for Podman. The logger keeps the log under
// consoleMaxBytes, and the one before it in console.log.1: a server's root
// that writes to its console without end fills no disk.

const (
	consoleLoggerArg0 = "hac-console-log"
	consoleMaxBytes   = 1 << 20
)

// IsConsoleLogger reports whether the process was started as a console
// logger.
func IsConsoleLogger(arg0 string) bool { return filepath.Base(arg0) == consoleLoggerArg0 }

// RunConsoleLogger copies standard input into the file args[1], moving it
// to args[1].1 whenever it reaches args[2] bytes, until end of input.
func RunConsoleLogger(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: hac-console-log FILE MAX_BYTES")
		return 2
	}
	max, err := strconv.ParseInt(args[2], 10, 64)
	if err != nil || max < 1 {
		fmt.Fprintln(os.Stderr, "hac-console-log: MAX_BYTES must be a positive number")
		return 2
	}
	w := &boundedLog{path: args[1], max: max}
	defer w.close()
	if _, err := io.Copy(w, os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "hac-console-log:", err)
		return 1
	}
	return 0
}

// boundedLog writes a file that is moved aside to PATH.1 when it reaches
// max bytes.
type boundedLog struct {
	path string
	max  int64
	f    *os.File
	size int64
}

func (l *boundedLog) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if l.f == nil || l.size >= l.max {
			if err := l.rotate(); err != nil {
				return written, err
			}
		}
		n := int64(len(p))
		if room := l.max - l.size; n > room {
			n = room
		}
		m, err := l.f.Write(p[:n])
		written += m
		l.size += int64(m)
		p = p[m:]
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// rotate opens the log, moving a full one aside first.
func (l *boundedLog) rotate() error {
	if l.f != nil {
		l.f.Close()
		if err := os.Rename(l.path, l.path+".1"); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, st.Size()
	return nil
}

func (l *boundedLog) close() {
	if l.f != nil {
		l.f.Close()
	}
}
