package cli

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/hac-project/hac/internal/agent"
)

// forwardedNames and forwardedPrefixes are the variables hac run forwards
// by default: what shapes how a program prints and computes, nothing that
// could be a credential. Everything else stays on the server unless the
// user names it with -e (SPEC P8).
var (
	forwardedNames    = []string{"LANG", "LANGUAGE", "TERM", "COLORTERM", "TZ"}
	forwardedPrefixes = []string{"LC_", "PYTHON", "OMP_"}
	envName           = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// onImageNames are forwarded too when the job runs on its server's own
// files (the grant's on_image), where the server's paths hold: which
// programs and libraries a name finds, the active environment, and home.
var onImageNames = []string{"PATH", "LD_LIBRARY_PATH", "HOME", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_EXE", "CONDA_PYTHON_EXE", "CONDA_SHLVL"}

// onImageEnv is what of environ goes with onImageNames.
func onImageEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if k, _, ok := strings.Cut(kv, "="); ok && slices.Contains(onImageNames, k) {
			out = append(out, kv)
		}
	}
	return out
}

// credentialish reports whether a name looks like it holds a secret; such
// a variable is not forwarded by a prefix rule, only when named.
func credentialish(key string) bool {
	up := strings.ToUpper(key)
	for _, s := range []string{"TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "KEY", "AUTH"} {
		if strings.Contains(up, s) {
			return true
		}
	}
	return false
}

// forwardedEnv picks what of environ the program gets: the default
// allowlist, then each -e NAME (its value here) or -e NAME=VALUE.
func forwardedEnv(environ, named []string) ([]string, error) {
	out := map[string]string{}
	here := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		here[k] = v
		if slices.Contains(forwardedNames, k) {
			out[k] = v
			continue
		}
		for _, p := range forwardedPrefixes {
			if strings.HasPrefix(k, p) && !credentialish(k) {
				out[k] = v
			}
		}
	}
	for _, n := range named {
		k, v, set := strings.Cut(n, "=")
		switch {
		case !envName.MatchString(k):
			return nil, fmt.Errorf("-e %q: a variable name is letters, digits and _, not starting with a digit", n)
		case agent.NodeSets(k): // naming them is a mistake worth saying
			return nil, fmt.Errorf("-e %s: the node sets %s itself", k, k)
		case len(n) > 128<<10:
			return nil, fmt.Errorf("-e %s: the value is longer than 128 KiB", k)
		}
		if !set {
			var ok bool
			if v, ok = here[k]; !ok {
				return nil, fmt.Errorf("-e %s: %s is not set here; use -e %s=VALUE", k, k, k)
			}
		}
		out[k] = v
	}
	env := make([]string, 0, len(out))
	for k, v := range out {
		env = append(env, k+"="+v)
	}
	slices.Sort(env)
	return env, nil
}
