package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestResolveConfigOrder(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "hac", "config")
	if err := writeUserConfig(p, Config{Addr: "http://file:1", Token: "ftok", Server: "fsrv"}); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{"XDG_CONFIG_HOME": dir}
	c, err := resolveConfig("", "", "", env(base))
	if err != nil || c.Addr != "http://file:1" || c.Token != "ftok" || c.Server != "fsrv" {
		t.Fatalf("file: %+v %v", c, err)
	}
	base["HAC_ADDR"], base["HAC_TOKEN"], base["HAC_SERVER"] = "envhost:2", "etok", "esrv"
	c, _ = resolveConfig("", "", "", env(base))
	if c.Addr != "http://envhost:2" || c.Token != "etok" || c.Server != "esrv" {
		t.Fatalf("env: %+v", c)
	}
	c, _ = resolveConfig("http://flag:3", "", "fl", env(base))
	if c.Addr != "http://flag:3" || c.Token != "ftok" || c.Server != "fl" {
		t.Fatalf("flags: %+v", c)
	}
	if _, err := resolveConfig("", "", "", env(map[string]string{"XDG_CONFIG_HOME": t.TempDir()})); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("no config: %v", err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("config mode %v", st.Mode())
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, bad := range []string{"addr", "colour = red"} {
		if _, err := ParseConfig(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseConfig(%q) accepted", bad)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("addr = http://x:1\ntoken = t\n# c\nserver = s\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConfig(strings.NewReader(s))
		if err != nil {
			return
		}
		again, err := ParseConfig(strings.NewReader(FormatConfig(c)))
		if err != nil || again.Addr != strings.TrimSpace(c.Addr) || again.Token != c.Token {
			t.Fatalf("round trip %+v -> %+v, %v", c, again, err)
		}
	})
}
