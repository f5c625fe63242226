package cli

import (
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/client"
)

// progressThreshold is the upload size from which a progress bar shows.
const progressThreshold = 16 << 20

// upload sends the blobs the node asked for, with a progress bar on a
// terminal for a large upload.
func (a *app) upload(sources []client.BlobSource, want []string, send func(*hacv1.ExecRequest) error) error {
	u, err := client.PlanUpload(sources, want)
	if err != nil {
		return err
	}
	var bar io.Writer = io.Discard
	if u.Total >= progressThreshold {
		if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			pb := progressbar.DefaultBytes(u.Total, "[info] Uploading the workspace")
			defer pb.Finish()
			bar = pb
		} else {
			a.say("info", "Uploading %d files (%.1f MiB) of the workspace...", u.Files(), float64(u.Total)/(1<<20))
		}
	}
	err = u.Send(send, bar)
	for _, path := range u.Changed {
		a.say("warning", "%s changed while it was uploaded: the program sees it as it was read then (list it in .hacignore to leave it behind).", path)
	}
	return err
}
