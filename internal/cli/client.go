package cli

import "github.com/hac-project/hac/internal/client"

// client resolves the configuration and connects.
func (a *app) client() (*client.Conn, error) {
	cfg, err := resolveConfig(a.addr, a.token, a.caPin, a.server, a.getenv)
	if err != nil {
		return nil, err
	}
	return client.Dial(cfg), nil
}
