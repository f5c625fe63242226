package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func testApp(out, errs *bytes.Buffer) *app {
	return &app{stdin: strings.NewReader(""), stdout: out, stderr: errs, getenv: func(string) string { return "" }, ctx: context.Background()}
}

// TestEveryCommandHasExamples: SPEC A13's examples in every command's
// help, and no help that cites the SPEC's requirement ids, which users
// do not have.
func TestEveryCommandHasExamples(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		leaf := !c.HasSubCommands()
		if leaf && !c.Hidden && c.Name() != "help" && c.Parent() != nil && c.Parent().Name() != "completion" && c.Example == "" {
			t.Errorf("%s has no examples", c.CommandPath())
		}
		for _, text := range []string{c.Short, c.Long, c.Example} {
			if strings.Contains(text, "SPEC") {
				t.Errorf("%s's help cites the SPEC: %q", c.CommandPath(), text)
			}
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "SPEC") {
				t.Errorf("%s --%s cites the SPEC", c.CommandPath(), f.Name)
			}
		})
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(testApp(new(bytes.Buffer), new(bytes.Buffer)).rootCmd())
}

// TestHelpGolden: the help of the job commands, as users read it.
func TestHelpGolden(t *testing.T) {
	for _, cmd := range []string{"run", "logs", "attach", "fetch", "cancel", "jobs", "queue"} {
		var out, errs bytes.Buffer
		if code := testApp(&out, &errs).main([]string{"hac", cmd, "--help"}); code != 0 {
			t.Fatalf("hac %s --help: exit %d, %s", cmd, code, errs.String())
		}
		golden(t, "help-"+cmd+".golden", out.Bytes())
	}
}
