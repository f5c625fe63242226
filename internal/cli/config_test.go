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
	pin := "sha256:" + strings.Repeat("ab", 32)
	if err := writeUserConfig(p, Config{Addr: "https://file:1", CAPin: pin, Token: "ftok", Server: "fsrv"}); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{"XDG_CONFIG_HOME": dir}
	c, err := resolveConfig("", "", "", "", env(base))
	if err != nil || c.Addr != "https://file:1" || c.CAPin != pin || c.Token != "ftok" || c.Server != "fsrv" {
		t.Fatalf("file: %+v %v", c, err)
	}
	base["HAC_ADDR"], base["HAC_TOKEN"], base["HAC_SERVER"] = "envhost:2", "etok", "esrv"
	// Another address than the file's: its pin is not the file's, and no
	// pin is no trust.
	if _, err := resolveConfig("", "", "", "", env(base)); err == nil || !strings.Contains(err.Error(), "no CA pin for https://envhost:2") {
		t.Fatalf("env without a pin: %v", err)
	}
	base["HAC_CA_PIN"] = "system"
	c, err = resolveConfig("", "", "", "", env(base))
	if err != nil || c.Addr != "https://envhost:2" || c.CAPin != "system" || c.Token != "etok" || c.Server != "esrv" {
		t.Fatalf("env: %+v %v", c, err)
	}
	delete(base, "HAC_CA_PIN")
	// Each field from the first that has it: the address from the flag,
	// the token from the environment.
	c, err = resolveConfig("https://flag:3", "", "", "fl", env(base))
	if err == nil || c.Addr != "https://flag:3" || c.Token != "etok" || c.Server != "fl" {
		t.Fatalf("flags: %+v", c)
	}
	base["HAC_CA_PIN"] = strings.ToUpper(pin)
	if c, err = resolveConfig("", "", "", "", env(base)); err != nil || c.CAPin != pin {
		t.Fatalf("HAC_CA_PIN: %+v %v", c, err)
	}
	base["HAC_CA_PIN"] = "sha256:abc"
	if _, err = resolveConfig("", "", "", "", env(base)); err == nil || !strings.Contains(err.Error(), "HAC_CA_PIN") {
		t.Fatalf("a short HAC_CA_PIN: %v", err)
	}
	delete(base, "HAC_CA_PIN")
	for _, plain := range []string{"http://plain:4", "HTTP://plain:4", "ftp://plain:4"} {
		if _, err = resolveConfig(plain, "", "", "", env(base)); err == nil || !strings.Contains(err.Error(), "use https://plain:4") {
			t.Fatalf("%s is refused with a way out: %v", plain, err)
		}
	}
	if _, err := resolveConfig("", "", "", "", env(map[string]string{"XDG_CONFIG_HOME": t.TempDir()})); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("no config: %v", err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("config mode %v", st.Mode())
	}
}

// TestResolveConfigServerToken: --token with only HAC_ADDR set uses both;
// a server token does not take the file's server (it acts on its own),
// unless it is the file's own token (the config of a server made by hac).
func TestResolveConfigServerToken(t *testing.T) {
	dir := t.TempDir()
	pin := "sha256:" + strings.Repeat("ab", 32)
	if err := writeUserConfig(filepath.Join(dir, "hac", "config"), Config{Addr: "https://file:1", CAPin: pin, Token: "hacu_user", Server: "dev"}); err != nil {
		t.Fatal(err)
	}
	e := map[string]string{"XDG_CONFIG_HOME": dir, "HAC_ADDR": "https://file:1"}
	c, err := resolveConfig("", "hacs_web1", "", "", env(e))
	if err != nil || c.Addr != "https://file:1" || c.Token != "hacs_web1" || c.Server != "" || c.CAPin != pin {
		t.Fatalf("--token with HAC_ADDR: %+v %v", c, err)
	}
	e["HAC_TOKEN"] = "hacs_web1"
	if c, err = resolveConfig("", "", "", "", env(e)); err != nil || c.Server != "" {
		t.Fatalf("a server token in HAC_TOKEN took the file's server: %+v %v", c, err)
	}
	e["HAC_TOKEN"] = "hacu_other"
	if c, err = resolveConfig("", "", "", "", env(e)); err != nil || c.Server != "dev" {
		t.Fatalf("a user token: %+v %v", c, err)
	}
	// The file's token never goes to another address.
	if _, err := resolveConfig("https://elsewhere:9", "", "system", "", env(map[string]string{"XDG_CONFIG_HOME": dir})); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("the file's token with another address: %v", err)
	}
	own := t.TempDir()
	if err := writeUserConfig(filepath.Join(own, "hac", "config"), Config{Addr: "https://file:1", CAPin: pin, Token: "hacs_web1", Server: "web1"}); err != nil {
		t.Fatal(err)
	}
	if c, err = resolveConfig("", "", "", "", env(map[string]string{"XDG_CONFIG_HOME": own})); err != nil || c.Server != "web1" {
		t.Fatalf("a server's own config: %+v %v", c, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, bad := range []string{"addr", "colour = red", "ca_pin = sha256:12", "ca_pin = md5:" + strings.Repeat("0", 64)} {
		if _, err := ParseConfig(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseConfig(%q) accepted", bad)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("addr = https://x:1\nca_pin = sha256:" + strings.Repeat("0f", 32) + "\ntoken = t\n# c\nserver = s\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConfig(strings.NewReader(s))
		if err != nil {
			return
		}
		again, err := ParseConfig(strings.NewReader(FormatConfig(c)))
		if err != nil || again.Addr != strings.TrimSpace(c.Addr) || again.Token != c.Token || again.CAPin != c.CAPin {
			t.Fatalf("round trip %+v -> %+v, %v", c, again, err)
		}
	})
}
