package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/hac-project/hac/internal/vm/local"
)

// imageCmd manages the local driver's server images on this machine.
func (a *app) imageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Build and list server images of the local server driver (on this machine, as root)"}
	var dataDir, mirror string
	driver := func() (*local.Driver, error) {
		if dataDir == "" {
			dataDir = defaultDataDir(a.getenv, "")
		}
		cfg := local.DefaultConfig(filepath.Join(dataDir, "vm"))
		if mirror != "" {
			cfg.Mirror = mirror
		}
		return local.New(cfg)
	}
	build := &cobra.Command{
		Use:   "build [NAME]",
		Short: "Build an image now (default: " + local.DefaultImage + "), so that the first server need not wait",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := local.DefaultImage
			if len(args) == 1 {
				name = args[0]
			}
			d, err := driver()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "Building image %s (this can take a few minutes)...\n", name)
			root, err := d.BuildImage(name)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Image %s is ready in %s.\n", name, root)
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the images and whether they are built",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				dataDir = defaultDataDir(a.getenv, "")
			}
			var names []string
			for n := range local.Images {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				state := "not built"
				if _, err := os.Stat(filepath.Join(dataDir, "vm", "images", n, "rootfs", ".complete")); err == nil {
					state = "built"
				}
				fmt.Fprintf(a.stdout, "%-10s %-9s %s\n", n, state, local.Images[n])
			}
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", "", "hac serve's data folder (default /var/lib/hac for root)")
	build.Flags().StringVar(&mirror, "mirror", "", "Debian mirror (default http://deb.debian.org/debian)")
	cmd.AddCommand(build, list)
	return cmd
}
