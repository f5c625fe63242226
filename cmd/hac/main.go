// Command hac is the whole of hac in one binary: the control plane
// (hac serve), the node agent (hac agent) and the client (hac run, hac smi,
// hac switch-model ...). Installed as hac-smi or hac-switch-model it runs
// that command.
package main

import (
	"os"

	"github.com/hac-project/hac/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args)) }
