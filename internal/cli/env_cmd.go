package cli

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// imagePackages is where a server image's Python packages are (Debian's
// python3-* packages install there).
var imagePackages = "/usr/lib/python3/dist-packages"

// userSites are the user site-packages folders under a home.
func userSites(home string) []string {
	m, _ := filepath.Glob(filepath.Join(home, ".local/lib/python3*/site-packages"))
	return m
}

var versionLine = regexp.MustCompile(`(?m)^__version__\s*=\s*['"]([^'"]+)['"]`)

// torchVersion reads the version of the PyTorch package folder dir; ok is
// false for a folder that is not a whole PyTorch (a broken install).
func torchVersion(dir string) (version string, ok bool) {
	raw, err := os.ReadFile(filepath.Join(dir, "version.py"))
	if err != nil {
		return "", false
	}
	m := versionLine.FindSubmatch(raw)
	if m == nil {
		return "", false
	}
	if _, err := os.Stat(filepath.Join(dir, "__init__.py")); err != nil {
		return string(m[1]), false
	}
	return string(m[1]), true
}

// shadowedTorch warns when the user's site-packages hold a PyTorch that
// hides the image's (SPEC A7; the seed's auto-recovery): another version,
// or a broken one. It looks only when the server's layer holds one.
func (a *app) shadowedTorch(env *hacv1.Environment) {
	if env == nil || env.Layer == nil || env.Home == "" {
		return
	}
	home := strings.TrimPrefix(filepath.Clean(env.Home), "/")
	found := false
	for _, f := range env.Layer.Files {
		if strings.HasPrefix(f.Path, home+"/.local/lib/python3") && strings.HasSuffix(f.Path, "/site-packages/torch") {
			found = true
			break
		}
	}
	if !found {
		return
	}
	image, imageOK := torchVersion(filepath.Join(imagePackages, "torch"))
	for _, site := range userSites(env.Home) {
		dir := filepath.Join(site, "torch")
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		mine, ok := torchVersion(dir)
		switch {
		case !ok:
			a.say("warning", "%s is a broken PyTorch (version %q) that hides the image's PyTorch %s: run `hac env reset` to use the image's again.", dir, mine, cmp.Or(image, "(none)"))
		case imageOK && mine != image:
			a.say("warning", "%s (PyTorch %s) hides the image's PyTorch %s: if that is not what you meant, run `hac env reset` to use the image's again.", dir, mine, image)
		}
	}
}

// envCmd is hac env: the server's Python environment.
func (a *app) envCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "env", Short: "The server's Python environment, as jobs see it"}
	var all bool
	reset := &cobra.Command{
		Use:   "reset [--packages]",
		Short: "Use the image's Python packages again: move aside the user's packages that hide them",
		Long: `hac env reset moves the packages of your user site-packages (~/.local/lib/python3*/site-packages,
what pip install --user writes) that hide a package of the server's image, such as another or a
broken PyTorch, into ~/.local/share/hac/env-reset-TIME/, so that programs (and their jobs) import
the image's again. With --packages it moves all of your user site-packages. Your other files are
not touched, and nothing is deleted: move the folders back to undo.`,
		Example: "  hac env reset\n  hac env reset --packages",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			home, err := os.UserHomeDir()
			if err != nil {
				return err
			}
			return a.envReset(home, all)
		},
	}
	reset.Flags().BoolVar(&all, "packages", false, "move all of the user site-packages, not only what hides the image's")
	cmd.AddCommand(reset)
	return cmd
}

// envReset moves aside the user's packages that hide the image's (all of
// them with all).
func (a *app) envReset(home string, all bool) error {
	backup := filepath.Join(home, ".local/share/hac", "env-reset-"+time.Now().UTC().Format("20060102-150405"))
	moved := 0
	for _, site := range userSites(home) {
		entries, err := os.ReadDir(site)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Name() == "__pycache__" || !all && !hidesImage(e.Name()) {
				continue // compiled modules are Python's own, made again
			}
			rel, _ := filepath.Rel(home, filepath.Join(site, e.Name()))
			dst := filepath.Join(backup, rel)
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
				return err
			}
			if err := os.Rename(filepath.Join(site, e.Name()), dst); err != nil {
				return fmt.Errorf("move %s aside: %w", filepath.Join(site, e.Name()), err)
			}
			fmt.Fprintf(a.stdout, "Moved %s to %s\n", filepath.Join(site, e.Name()), dst)
			moved++
		}
	}
	if moved == 0 {
		fmt.Fprintln(a.stdout, "Nothing to reset: no package of yours hides the image's.")
		return nil
	}
	fmt.Fprintf(a.stdout, "The image's packages are used again. To undo, move the folders back from %s.\n", backup)
	return nil
}

// hidesImage reports whether a user site-packages entry (a package, a
// module, or its .dist-info) has a namesake in the image's packages.
func hidesImage(name string) bool {
	base := name
	for _, suffix := range []string{".dist-info", ".egg-info", ".py", ".pth"} {
		base = strings.TrimSuffix(base, suffix)
	}
	if i := strings.Index(base, "-"); i > 0 && (strings.HasSuffix(name, ".dist-info") || strings.HasSuffix(name, ".egg-info")) {
		base = base[:i]
	}
	for _, cand := range []string{base, base + ".py"} {
		if _, err := os.Lstat(filepath.Join(imagePackages, cand)); err == nil {
			return true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false
		}
	}
	return false
}
