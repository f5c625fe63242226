package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hac-project/hac/internal/runner"
	"github.com/hac-project/hac/internal/version"
	"github.com/hac-project/hac/internal/vm/local"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
)

// aliases maps argv[0] names to the subcommand they stand for.
var aliases = map[string]string{
	"hac-smi":          "smi",
	"hac-switch-model": "switch-model",
}

// exitError ends the process with a code and, unless quiet, a message.
type exitError struct {
	code  int
	err   error
	quiet bool
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// exitCode returns an error that makes Main exit with code, printing
// nothing more.
func exitCode(code int) error { return &exitError{code: code, quiet: true} }

// app is one invocation: its streams, environment and global flags.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	ctx            context.Context

	addr, token, caPin, server string
}

// Main runs the hac command line with args (args[0] is the program name)
// and returns the exit code.
func Main(args []string) int {
	if runner.IsInit(args[0]) {
		return runner.Init() // a job sandbox's first process, started by the agent
	}
	if local.IsConsoleLogger(args[0]) {
		return local.RunConsoleLogger(args) // a server's console, started by the server driver
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, ctx: ctx}
	return a.main(args)
}

func (a *app) main(args []string) int {
	rest := args[1:]
	if sub, ok := aliases[filepath.Base(args[0])]; ok {
		rest = append([]string{sub}, rest...)
	}
	root := a.rootCmd()
	root.SetArgs(rest)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(a.ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if !ee.quiet && ee.err != nil {
			fmt.Fprintf(a.stderr, "hac: %s\n", userMessage(ee.err))
		}
		return ee.code
	}
	fmt.Fprintf(a.stderr, "hac: %s\n", userMessage(err))
	if isUsageError(err) {
		fmt.Fprintln(a.stderr, "Run 'hac --help' for usage.")
		return 2
	}
	return 1
}

// usageError marks a mistake in the command line.
type usageError struct{ error }

func isUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// markUsageErrors makes every flag and argument error of cmd's tree a
// usageError, so that Main tells them apart by type.
func markUsageErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		var digit rune
		if _, scanErr := fmt.Sscanf(err.Error(), "unknown shorthand flag: '%c'", &digit); scanErr == nil && digit >= '0' && digit <= '9' {
			return usageError{fmt.Errorf("-%c...: a negative number is not an argument hac takes (prices, counts and sizes are 0 or more)", digit)}
		}
		return usageError{err}
	})
	if !cmd.Runnable() && cmd.HasSubCommands() {
		// A group: alone it shows its help; with a word it does not know,
		// that word is a usage error.
		cmd.Args = cobra.ArbitraryArgs
		cmd.SuggestionsMinimumDistance = 2
		cmd.RunE = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				hint := ""
				if near := c.SuggestionsFor(args[0]); len(near) > 0 {
					hint = fmt.Sprintf("; did you mean %s?", strings.Join(near, " or "))
				}
				return usageError{fmt.Errorf("unknown command %q for %q%s", args[0], c.CommandPath(), hint)}
			}
			return c.Help()
		}
		markSubcommands(cmd)
		return
	}
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	markSubcommands(cmd)
}

func markSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		markUsageErrors(sub)
	}
}

// userMessage turns an API error into text for the user.
func userMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeUnavailable:
			return "cannot reach the hac control plane: " + ce.Message() + " (is hac serve running? check HAC_ADDR or your config)"
		}
		return ce.Message()
	}
	return err.Error()
}

// CommandTree is hac's whole command tree, for tools that document it
// (cmd/hac-man writes the man pages from it).
func CommandTree() *cobra.Command {
	return (&app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, ctx: context.Background()}).rootCmd()
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "hac",
		Short:         "hac: a pool of GPUs attached to your programs while they run",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version, // hac --version: this binary's; hac version asks the control plane too
	}
	root.SetVersionTemplate("Client Version: {{.Version}}\n")
	root.CompletionOptions.HiddenDefaultCmd = false // hac completion bash|zsh|fish|powershell
	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", "", "control plane URL (default: HAC_ADDR, then the config file)")
	pf.StringVar(&a.token, "token", "", "API token (default: HAC_TOKEN, then the config file)")
	pf.StringVar(&a.caPin, "ca-pin", "", "the control plane's CA pin, sha256:HEX (default: HAC_CA_PIN, then the config file)")
	pf.StringVar(&a.server, "server", "", "server whose accelerator to use, with a user token (default: HAC_SERVER, then the config file)")
	defer markUsageErrors(root)
	defer addExamples(root)
	root.AddCommand(a.serveCmd(), a.agentCmd(), a.nodeCmd(), a.runCmd(), a.envCmd(), a.smiCmd(), a.switchModelCmd(), a.serverCmd(),
		a.jobCmd(), a.logsCmd(), a.attachCmd(), a.fetchCmd(), a.cancelCmd(), a.keypairCmd(), a.portForwardCmd(), a.firewallCmd(), a.nodesCmd(), a.jobsCmd(), a.queueCmd(), a.userCmd(), a.priceCmd(), a.usageCmd(), a.invoiceCmd(), a.imageCmd(), a.referenceModelCmd(), a.versionCmd())
	return root
}
