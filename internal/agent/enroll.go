package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"connectrpc.com/connect"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/gen/hac/v1/hacv1connect"
	"github.com/hac-project/hac/internal/apiclient"
	"github.com/hac-project/hac/internal/pki"
	"github.com/hac-project/hac/internal/token"
)

// credential is what a node keeps of its enrollment, in DataDir (0600).
type credential struct {
	ControlPlane string `json:"control_plane"`
	Name         string `json:"name"`
	Token        string `json:"token"`
	// CAPin names the CA the control plane's certificate is from.
	CAPin string `json:"ca_pin,omitempty"`
}

func credentialPath(dataDir string) string { return filepath.Join(dataDir, "node-credential.json") }

// ErrNotEnrolled means a node has no credential and no join token.
var ErrNotEnrolled = errors.New("agent: this node is not enrolled: on the control plane run hac node add NAME (admin), then start hac agent with the join token it prints (--join-file FILE, HAC_JOIN_TOKEN, or --join TOKEN)")

// Enroll fills cfg.Token and cfg.Name with the node's own credential: the
// one kept in cfg.DataDir, or, on first start, the one the control plane
// gives for join (a one-time token from hac node add), which is then kept.
// The credential never appears on a command line or in a log. cfg.CAPin,
// when empty, comes from the credential, else from the join token.
func Enroll(ctx context.Context, cfg Config, join string) (Config, error) {
	if err := checkURL(cfg.ControlPlane); err != nil {
		return cfg, err
	}
	if cfg.CAPin != "" {
		pin, err := pki.ParsePin(cfg.CAPin)
		if err != nil {
			return cfg, fmt.Errorf("agent: --ca-pin: %w", err)
		}
		cfg.CAPin = pin
	}
	path := credentialPath(cfg.DataDir)
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		var c credential
		if err := json.Unmarshal(raw, &c); err != nil || c.Token == "" || c.Name == "" {
			return cfg, fmt.Errorf("agent: %s is damaged: remove it and enroll the node again (hac node remove, hac node add)", path)
		}
		if cfg.Name != "" && cfg.Name != c.Name {
			return cfg, fmt.Errorf("agent: this node is enrolled as %s, not %s (its credential is in %s)", c.Name, cfg.Name, path)
		}
		cfg.Name, cfg.Token = c.Name, c.Token
		if cfg.CAPin == "" {
			cfg.CAPin = c.CAPin
		}
		if cfg.CAPin == "" {
			return cfg, fmt.Errorf("agent: %s holds no CA pin (it was written before hac spoke TLS): start hac agent once with --ca-pin or HAC_CA_PIN, the pin hac serve prints", path)
		}
		return cfg, nil
	case !errors.Is(err, os.ErrNotExist):
		return cfg, fmt.Errorf("agent: read the node's credential: %w", err)
	case join == "":
		return cfg, ErrNotEnrolled
	}
	if cfg.CAPin == "" {
		pin, err := pki.ParsePin(token.PinIn(join))
		if err != nil {
			return cfg, fmt.Errorf("agent: the join token carries no CA pin: make a new one with hac node add NAME, or give --ca-pin")
		}
		cfg.CAPin = pin
	}
	httpc := cfg.HTTPClient
	if httpc == nil {
		httpc = apiclient.New(cfg.CAPin)
	}
	c := hacv1connect.NewAgentServiceClient(httpc, cfg.ControlPlane, connect.WithInterceptors(apiclient.Bearer(join)))
	resp, err := c.Join(ctx, connect.NewRequest(&hacv1.JoinRequest{ProtocolVersion: hacv1.AgentProtocolVersion}))
	if connect.CodeOf(err) == connect.CodeUnauthenticated {
		return cfg, fmt.Errorf("agent: the join token is wrong, used or expired: make a new one with hac node add NAME")
	}
	if err != nil {
		return cfg, fmt.Errorf("agent: join %s: %w", cfg.ControlPlane, err)
	}
	name := resp.Msg.NodeName
	if cfg.Name != "" && cfg.Name != name {
		return cfg, fmt.Errorf("agent: the join token is for node %s, not %s", name, cfg.Name)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return cfg, err
	}
	out, _ := json.Marshal(credential{ControlPlane: cfg.ControlPlane, Name: name, Token: resp.Msg.Token, CAPin: cfg.CAPin})
	if err := writePrivate(path, out); err != nil {
		return cfg, fmt.Errorf("agent: keep the node's credential: %w", err)
	}
	cfg.Name, cfg.Token = name, resp.Msg.Token
	return cfg, nil
}

// checkURL refuses a control plane URL that is not https.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("agent: --server %q: want a URL such as https://10.0.0.1:7470", raw)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("agent: --server %s: hac's API speaks TLS only: use https://%s", raw, u.Host)
	}
	return nil
}

// writePrivate writes a file only its owner can read, atomically.
func writePrivate(path string, data []byte) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
