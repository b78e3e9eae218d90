package appliance

import (
	"context"

	"github.com/clauderon/clauderond/appliance/session"
	"github.com/clauderon/clauderond/injector"
)

// wireSessions connects appliance/session to the backend. It needs the full
// Docker client; a run with a fake Docker API (tests) serves without sessions.
// A session store that cannot open is reported, not fatal: enforcement does
// not depend on it.
func (d *daemon) wireSessions(ctx context.Context, b *backend) {
	dc, ok := d.docker.(session.DockerAPI)
	if !ok {
		return
	}
	cfg := d.config()
	m, err := session.New(ctx, session.Options{
		Docker: dc, Network: d.network.Name, StateDir: cfg.StateDir, CAPath: d.ca.CertPath(),
		Image: cfg.Sessions.Image, User: cfg.Sessions.User, Workdir: cfg.Sessions.Workdir,
		Placeholders: injector.Placeholders(), Logger: d.base,
	})
	if err != nil {
		d.log.Error("sessions unavailable: opening the session store failed", "err", err)
		return
	}
	d.closers = append(d.closers, m.Close)
	if err := m.Reconcile(ctx); err != nil {
		d.log.Warn("reconciling sessions with docker", "err", err)
	}
	b.sessions = m
}
