package appliance

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clauderon/clauderond/appliance/authz"
	"github.com/clauderon/clauderond/appliance/config"
	"golang.org/x/sync/errgroup"
)

// stepAuthz serves Docker's authorization plugin when authz.enabled (see
// appliance/authz). dockerd must be told to use it; the README says how,
// and that with the plugin on, dockerd refuses every request while
// clauderond is down.
func (d *daemon) stepAuthz(ctx context.Context, g *errgroup.Group) error {
	cfg := d.config()
	if !cfg.Authz.Enabled {
		return nil
	}
	sock := cfg.Authz.Socket
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(sock), err)
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale plugin socket %s: %w", sock, err)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("listening on the authorization plugin socket %s (authz.socket): %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil { // dockerd (root) only
		ln.Close()
		return fmt.Errorf("chmod 0600 %s: %w", sock, err)
	}
	d.listeners = append(d.listeners, listenerStatus{"authz", sock, true})
	pol := d.authzPolicy(cfg)
	d.authz.Store(pol)
	srv := &http.Server{Handler: authz.Handler(pol), ReadHeaderTimeout: 10 * time.Second}
	d.log.Info("docker authorization plugin listening", "socket", sock, "plugin", authzPluginName(sock))
	serveSocket(ctx, g, srv, ln, sock, "docker authorization plugin")
	return nil
}

// authzPluginName is the name dockerd knows the plugin by.
func authzPluginName(sock string) string { return strings.TrimSuffix(filepath.Base(sock), ".sock") }

func (d *daemon) authzPolicy(cfg *config.Config) *authz.Policy {
	protected := []string{cfg.StateDir, "/etc/clauderon", "/var/run/docker.sock", "/run/docker.sock", "/run/docker/plugins",
		filepath.Dir(cfg.SocketPath())}
	if cfg.Sessions.WorkspacesDir != "" {
		protected = append(protected, cfg.Sessions.WorkspacesDir) // other users' clones
	}
	if cfg.CredentialsFile != "" {
		protected = append(protected, cfg.CredentialsFile)
	}
	return &authz.Policy{
		Network: d.network.Name, Allow: cfg.Authz.AllowNetworks, Protected: protected,
		ExpectRun: func(tok string) bool {
			m := d.records.m.Load()
			return m != nil && m.ExpectsRun(tok)
		},
		ClaimRun: func(tok string) bool {
			m := d.records.m.Load()
			return m != nil && m.ClaimRun(tok)
		},
		ReleaseRun: func(tok string) {
			if m := d.records.m.Load(); m != nil {
				m.ReleaseRun(tok)
			}
		},
		OwnMounts: func(tok string) []string {
			if m := d.records.m.Load(); m != nil {
				return m.OwnMounts(tok)
			}
			return nil
		},
		PublicFiles: []string{filepath.Join(cfg.StateDir, "proxy-ca.pem"), filepath.Join(cfg.StateDir, "ca-bundle.pem")},
		Audit: func(r authz.Refusal) {
			if d.events != nil {
				d.events.emit(record{TS: time.Now(), Kind: "docker", Decision: "deny", Rule: "authz:" + r.Rule,
					Method: r.Method, Path: r.URI, Error: r.Msg})
			}
		},
		Logger: d.base,
	}
}
