package cli

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are the help's examples of the commands whose definitions give
// none (SPEC A13: every command has some; TestEveryCommandHasExamples).
var examples = map[string]string{
	"hac firewall add":         "hac firewall add web1 --port 10022 --source 203.0.113.0/24\nhac firewall add web1 --port 10053 --protocol udp --source 0.0.0.0/0",
	"hac firewall delete":      "hac firewall delete 3",
	"hac firewall list":        "hac firewall list\nhac firewall list -o json",
	"hac image build":          "hac image build            # every image, debian-12 first\nhac image build debian-12",
	"hac image list":           "hac image list",
	"hac keypair create":       "hac keypair create keypair1 --ppk     # keypair1.pem (0600) and keypair1.ppk for PuTTY\nhac keypair create ci --type rsa",
	"hac keypair delete":       "hac keypair delete keypair1",
	"hac keypair import":       "hac keypair import laptop ~/.ssh/id_ed25519.pub",
	"hac keypair list":         "hac keypair list\nhac keypair list -o yaml",
	"hac node drain":           "hac node drain gpu1            # no new jobs; running ones go on\nhac node drain gpu1 --resume",
	"hac node remove":          "hac node remove gpu1",
	"hac nodes":                "hac nodes\nhac nodes -o json | jq '.nodes[] | {name, state}'",
	"hac price list":           "hac price list\nhac price list -o wide    # who set each price, and when",
	"hac port-forward add":     "hac port-forward add web1 --private-port 22 --public-port 10022\nhac port-forward add web1 --private-port 8888      # a free public port is chosen",
	"hac port-forward delete":  "hac port-forward delete 2",
	"hac port-forward list":    "hac port-forward list",
	"hac queue":                "hac queue\nhac queue -o json | jq '.jobs[] | select(.state == \"queued\") | .waitReason'",
	"hac queue cancel":         "hac queue cancel 42            # hac cancel 42 also stops running jobs",
	"hac reference-model get":  "hac reference-model get resnet50 --dir models/",
	"hac reference-model list": "hac reference-model list",
	"hac serve":                "hac serve --dev                         # everything on this machine, simulated GPUs\nhac serve --listen 0.0.0.0:7470 --tls-name gpu.example.com",
	"hac server create":        "hac server create web1 --keypair keypair1 --model small.16gb",
	"hac server delete":        "hac server delete web1",
	"hac server list":          "hac server list\nhac server list -o wide",
	"hac server register":      "hac server register lab-box --model xlarge.96gb --image host   # prints the server's token once",
	"hac server set-model":     "hac server set-model web1 xlarge.96gb",
	"hac server show":          "hac server show web1",
	"hac server start":         "hac server start web1",
	"hac server stop":          "hac server stop web1",
	"hac smi":                  "hac smi\nhac smi -o json\nhac smi --reset                 # release a stuck allocation",
	"hac switch-model":         "hac switch-model                # a menu of the models\nhac switch-model xlarge.96gb",
	"hac user create":          "hac user create alice          # prints alice's token once\nhac user create bob --admin",
	"hac version":              "hac version                     # this binary's and the control plane's",
}

// addExamples sets the examples above on cmd's tree, indented as cobra
// prints them.
func addExamples(cmd *cobra.Command) {
	if ex, ok := examples[cmd.CommandPath()]; ok && cmd.Example == "" {
		cmd.Example = "  " + strings.ReplaceAll(ex, "\n", "\n  ")
	}
	for _, sub := range cmd.Commands() {
		addExamples(sub)
	}
}
