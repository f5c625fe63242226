package cli

import (
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/hac-project/hac/internal/client"
)

// progressThreshold is the upload size from which a progress bar shows.
const progressThreshold = 16 << 20

// progress returns what shows a large upload's progress: a bar on a
// terminal, else one line.
func (a *app) progress(u *client.Upload) io.Writer {
	if u.Total < progressThreshold {
		return io.Discard
	}
	if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return progressbar.DefaultBytes(u.Total, "[info] Uploading the workspace")
	}
	a.say("info", "Uploading %d files (%.1f MiB) of the workspace...", u.Files(), float64(u.Total)/(1<<20))
	return io.Discard
}
