package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/hac-project/hac/internal/client"
	"github.com/hac-project/hac/internal/pki"
	"github.com/hac-project/hac/internal/token"
)

// Config is what a client needs to reach the control plane.
type Config = client.Config

// ErrNoConfig is returned when no configuration is found anywhere.
var ErrNoConfig = errors.New("no hac server configured: run hac serve --dev or set HAC_ADDR/HAC_TOKEN")

// ParseConfig reads "key = value" lines (addr, ca_pin, token, server);
// blank lines and # comments are skipped.
func ParseConfig(r io.Reader) (Config, error) {
	var c Config
	s := bufio.NewScanner(r)
	line := 0
	for s.Scan() {
		line++
		text := strings.TrimSpace(s.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		k, v, ok := strings.Cut(text, "=")
		if !ok {
			return c, fmt.Errorf("line %d: want key = value", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "addr":
			c.Addr = v
		case "token":
			c.Token = v
		case "server":
			c.Server = v
		case "ca_pin":
			pin, err := pki.ParsePin(v)
			if err != nil {
				return c, fmt.Errorf("line %d: %w", line, err)
			}
			c.CAPin = pin
		default:
			return c, fmt.Errorf("line %d: unknown key %q (known: addr, ca_pin, token, server)", line, k)
		}
	}
	return c, s.Err()
}

// FormatConfig renders a config file.
func FormatConfig(c Config) string {
	var b strings.Builder
	b.WriteString("# hac client configuration\n")
	fmt.Fprintf(&b, "addr = %s\n", c.Addr)
	if c.CAPin != "" {
		fmt.Fprintf(&b, "ca_pin = %s\n", c.CAPin)
	}
	fmt.Fprintf(&b, "token = %s\n", c.Token)
	if c.Server != "" {
		fmt.Fprintf(&b, "server = %s\n", c.Server)
	}
	return b.String()
}

// UserConfigPath is $XDG_CONFIG_HOME/hac/config, else ~/.config/hac/config.
func UserConfigPath(getenv func(string) string) string {
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "hac", "config")
	}
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".config", "hac", "config")
}

// SystemConfigPath is the config a server made by hac is given.
const SystemConfigPath = "/etc/hac/config"

// resolveConfig finds the configuration. The address and the token are
// each taken from the first that has one: flags, then HAC_ADDR/HAC_TOKEN,
// then the user's file, then /etc/hac/config (the first file found); the
// file's token only for the file's address. The
// default server is --server, else HAC_SERVER, else the file's; but a
// server token acts on its own server, so the file's server does not
// come with one (it may be another server's file). The CA pin is
// --ca-pin, else HAC_CA_PIN, else the file's when the address is the
// file's.
func resolveConfig(flagAddr, flagToken, flagPin, flagServer string, getenv func(string) string) (Config, error) {
	var file Config
	for _, p := range []string{UserConfigPath(getenv), SystemConfigPath} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return Config{}, fmt.Errorf("config %s: %w", p, err)
		}
		file, err = ParseConfig(f)
		f.Close()
		if err != nil {
			return Config{}, fmt.Errorf("config %s: %w", p, err)
		}
		file.Source = p
		break
	}
	first := func(candidates ...[2]string) (value, source string) {
		for _, cand := range candidates {
			if cand[0] != "" {
				return cand[0], cand[1]
			}
		}
		return "", ""
	}
	var c Config
	c.Addr, c.Source = first([2]string{flagAddr, "--addr"}, [2]string{getenv("HAC_ADDR"), "HAC_ADDR"}, [2]string{file.Addr, file.Source})
	if c.Addr != file.Addr {
		// The file's token and server are for the file's control plane:
		// never sent to another.
		file.Token, file.Server = "", ""
	}
	c.Token, _ = first([2]string{flagToken, "--token"}, [2]string{getenv("HAC_TOKEN"), "HAC_TOKEN"}, [2]string{file.Token, file.Source})
	if !strings.HasPrefix(c.Token, token.ServerPrefix) || c.Token == file.Token {
		c.Server = file.Server
	}
	if c.Addr == file.Addr {
		c.CAPin = file.CAPin
	}
	for _, p := range []struct{ name, value string }{{"HAC_CA_PIN", getenv("HAC_CA_PIN")}, {"--ca-pin", flagPin}} {
		if p.value != "" {
			pin, err := pki.ParsePin(p.value)
			if err != nil {
				return c, fmt.Errorf("%s: %w", p.name, err)
			}
			c.CAPin = pin
		}
	}
	if v := getenv("HAC_SERVER"); v != "" {
		c.Server = v
	}
	if flagServer != "" {
		c.Server = flagServer
	}
	if c.Addr == "" || c.Token == "" {
		return c, ErrNoConfig
	}
	if !strings.Contains(c.Addr, "://") {
		c.Addr = "https://" + c.Addr
	}
	u, err := url.Parse(c.Addr)
	if err != nil || u.Host == "" {
		return c, fmt.Errorf("addr %q (from %s): want a URL such as https://10.0.0.1:7470", c.Addr, c.Source)
	}
	if u.Scheme != "https" {
		return c, fmt.Errorf("addr %s (from %s): hac's API speaks TLS only: use https://%s, with the ca_pin that hac serve prints", c.Addr, c.Source, u.Host)
	}
	if c.CAPin == "" {
		return c, fmt.Errorf("no CA pin for %s (from %s): set ca_pin in the config, HAC_CA_PIN or --ca-pin to the pin hac serve prints (or to %q for a certificate from a public CA)", c.Addr, c.Source, pki.SystemRoots)
	}
	return c, nil
}

// writeUserConfig writes the user's config file (mode 0600).
func writeUserConfig(path string, c Config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(FormatConfig(c)), 0o600)
}
