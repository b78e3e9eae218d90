package appliance

import (
	"context"
	"path/filepath"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/appliance/doctor"

	"github.com/clauderon/clauderond/appliance/session"
	"github.com/clauderon/clauderond/injector"
)

// wireSessions connects appliance/session and appliance/doctor to the backend. It needs the full
// Docker client; a run with a fake Docker API (tests) serves without sessions.
// A session store that cannot open is reported, not fatal: enforcement does
// not depend on it.
func (d *daemon) wireSessions(ctx context.Context, b *backend) {
	d.wireDoctor(b)
	dc, ok := d.docker.(session.DockerAPI)
	if !ok {
		return
	}
	cfg := d.config()
	workspaces := cfg.Sessions.WorkspacesDir
	if workspaces == "" {
		workspaces = config.DefaultWorkspacesDir
	}
	m, err := session.New(ctx, session.Config{
		Docker: dc, Network: d.network.Name, StateDir: cfg.StateDir, CAPath: d.ca.CertPath(),
		Image: cfg.Sessions.Image, User: cfg.Sessions.User, Workdir: cfg.Sessions.Workdir, WorkspacesDir: workspaces,
		DNS:          d.network.Gateway.String(),
		Placeholders: injector.Placeholders(), Logger: d.base,
		Authorize: func(ctx context.Context, profile string) error { return authorizeProfile(ctx, d.config(), profile) },
		IsAdmin:   func(ctx context.Context) bool { return isAdmin(ctx, d.config()) },
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
	d.records.m.Store(m)
	for _, c := range d.tableList() { // runs started while the daemon was down
		m.BindRun(ctx, c.ID, c.Labels)
	}
}

// wireDoctor makes Backend.Doctor run appliance/doctor's end-to-end checks
// (status, CA, audit, and a probe container on the bridge).
func (d *daemon) wireDoctor(b *backend) {
	dc, ok := d.docker.(doctor.Docker)
	if !ok {
		return // fake Docker: the backend's self-check answers
	}
	b.doctor = func(ctx context.Context) (api.DoctorReport, error) {
		cfg := d.config()
		deps := doctor.Deps{
			Status: b.Status, Docker: dc, Network: d.network.Name,
			CAPath: d.ca.CertPath(), CAKeyPath: d.ca.KeyPath(), AuditPath: d.auditPath(),
			ClaudeJSON: filepath.Join(cfg.StateDir, "claude.json"), SessionUser: cfg.Sessions.User,
			Version: d.opts.version, SelfExe: d.opts.doctorExe, CredentialsFile: cfg.CredentialsFile,
		}
		if m := d.records.m.Load(); m != nil {
			deps.ProbeToken = m.ProbeToken
		}
		if pol := d.authz.Load(); pol != nil {
			deps.AuthzAsked, deps.AuthzPlugin = pol.Asked, authzPluginName(cfg.Authz.Socket)
		}
		return doctor.Run(ctx, deps), nil
	}
}
