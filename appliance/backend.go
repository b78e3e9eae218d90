package appliance

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/clauderon/clauderond/appliance/api"
)

// sessions is what the backend needs from appliance/session.
type sessions interface {
	Create(ctx context.Context, req api.CreateRequest) (api.Session, error)
	List(ctx context.Context) ([]api.Session, error)
	Remove(ctx context.Context, name string) error
	Control(ctx context.Context, name, action string) (api.Session, error)
	PrepareWorkspace(ctx context.Context, name string) (api.Workspace, error)
	Logs(ctx context.Context, name string, follow bool, w io.Writer) error
	RunArgs(ctx context.Context, req api.RunRequest) (api.RunArgs, error)
}

// backend implements api.Backend over the running daemon.
type backend struct {
	d        *daemon
	sessions sessions                                            // nil: sessions unavailable
	doctor   func(ctx context.Context) (api.DoctorReport, error) // nil: built-in checks
}

var _ api.Backend = (*backend)(nil)

func (b *backend) Status(ctx context.Context) (api.Status, error) {
	return b.d.status(ctx), nil
}

func (b *backend) noSessions() error {
	return fmt.Errorf("%w: sessions are not available in this daemon", api.ErrUnavailable)
}

func (b *backend) CreateSession(ctx context.Context, req api.CreateRequest) (api.Session, error) {
	if b.sessions == nil {
		return api.Session{}, b.noSessions()
	}
	return b.sessions.Create(ctx, req)
}

func (b *backend) ListSessions(ctx context.Context) ([]api.Session, error) {
	if b.sessions == nil {
		return nil, b.noSessions()
	}
	return b.sessions.List(ctx)
}

func (b *backend) ControlSession(ctx context.Context, name, action string) (api.Session, error) {
	if b.sessions == nil {
		return api.Session{}, b.noSessions()
	}
	return b.sessions.Control(ctx, name, action)
}

func (b *backend) PrepareWorkspace(ctx context.Context, name string) (api.Workspace, error) {
	if b.sessions == nil {
		return api.Workspace{}, b.noSessions()
	}
	return b.sessions.PrepareWorkspace(ctx, name)
}

func (b *backend) RemoveSession(ctx context.Context, name string) error {
	if b.sessions == nil {
		return b.noSessions()
	}
	return b.sessions.Remove(ctx, name)
}

func (b *backend) SessionLogs(ctx context.Context, name string, follow bool, w io.Writer) error {
	if b.sessions == nil {
		return b.noSessions()
	}
	return b.sessions.Logs(ctx, name, follow, w)
}

func (b *backend) RunArgs(ctx context.Context, req api.RunRequest) (api.RunArgs, error) {
	if b.sessions == nil {
		return api.RunArgs{}, b.noSessions()
	}
	return b.sessions.RunArgs(ctx, req)
}

func (b *backend) Doctor(ctx context.Context) (api.DoctorReport, error) {
	if b.doctor != nil {
		return b.doctor(ctx)
	}
	return b.d.selfCheck(ctx), nil
}

func (b *backend) CA(context.Context) (api.CA, error) {
	return api.CA{Path: b.d.ca.CertPath(), Fingerprint: b.d.ca.Fingerprint(), PEM: string(b.d.ca.CertPEM())}, nil
}

// Audit streams the audit; a caller who is not an administrator sees
// only the lines of the containers it made through clauderond.
func (b *backend) Audit(ctx context.Context, q api.AuditQuery, w io.Writer) error {
	owner := ""
	if !isAdmin(ctx, b.d.config()) {
		p, _ := api.PeerFrom(ctx)
		owner = accountOf(p).name
	}
	return tailAudit(ctx, b.d.auditPath(), q, owner, w)
}

var _ api.AuditVerifier = (*backend)(nil)

// AuditVerify checks the audit chain of the running daemon.
func (b *backend) AuditVerify(ctx context.Context) (api.AuditVerification, error) {
	return b.d.verifyAudit(ctx)
}

func (b *backend) Reload(ctx context.Context) error {
	if err := b.d.reload(ctx); err != nil {
		return fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	return nil
}

// status is the daemon's api.Status.
func (d *daemon) status(ctx context.Context) api.Status {
	cfg := d.config()
	s := api.Status{
		Ready: d.ready.Load(), Version: d.opts.version, StateDir: cfg.StateDir, Socket: cfg.SocketPath(),
		Mode: string(cfg.Egress.Mode),
		Network: api.Network{Name: d.network.Name, Bridge: d.network.Bridge, Subnet: d.network.Subnet.String(),
			Gateway: d.network.Gateway.String()},
		Enforcement: api.EnforcementDegraded,
		Requests:    map[string]uint64{},
	}
	for _, l := range d.listeners {
		s.Listeners = append(s.Listeners, api.Listener{Name: l.Name, Address: l.Address, OK: l.OK})
	}
	if d.enforcer != nil {
		state, drift, _ := d.enforcer.snapshot()
		s.Enforcement, s.Drift = state, drift
		if state != EnforcementIntact {
			s.Problems = append(s.Problems, "nftables ruleset differs from the desired one; it is being re-applied")
		}
	}
	if d.opts.nft != nil {
		if cs, err := d.opts.nft.Counters(ctx); err == nil {
			for _, c := range cs {
				s.Counters = append(s.Counters, api.Counter{Rule: c.Rule, Packets: c.Packets, Bytes: c.Bytes})
			}
		}
	}
	if d.store != nil {
		for _, c := range d.store.Summary() {
			s.Credentials = append(s.Credentials, api.Credential{Profile: c.Profile, Name: c.Name, Source: c.Source,
				Kind: c.Kind, Fingerprint: c.Fingerprint, Present: c.Present})
		}
	}
	if d.table != nil {
		trust, access := d.config().Profiles.TrustLabels, d.config().Profiles.Access
		for _, c := range d.table.List() {
			profile, owner, reason := profileFor(&d.records, trust, c.ID, c.Name, c.Profile)
			if c.Namespace != "" {
				profile, reason = podProfile(access, c)
			}
			if r := c.Refusal(d.network.Name); r != "" {
				reason = r
			}
			s.Containers = append(s.Containers, api.Container{ID: c.ID, Name: c.Name, IP: c.IP.String(), Profile: profile,
				Owner: owner, OtherNetworks: c.OtherNetworks, NoCredential: reason})
			switch {
			case len(c.OtherNetworks) > 0:
				s.Problems = append(s.Problems, fmt.Sprintf("container %s is also attached to %s: it gets no credential "+
					"(disconnect it from the other networks, or run it on %s alone)", c.Name, strings.Join(c.OtherNetworks, ", "), d.network.Name))
			case reason != "":
				s.Problems = append(s.Problems, reason+": it gets no credential")
			}
		}
	}
	if d.ca != nil {
		s.CA = api.CA{Path: d.ca.CertPath(), Fingerprint: d.ca.Fingerprint()}
	}
	if d.events != nil {
		s.Requests = d.events.decisions()
	}
	if p := hostResolverProblem(d.network.Gateway); p != "" && !d.config().NodeMode() {
		s.Problems = append(s.Problems, p)
	}
	if !s.Ready {
		s.Problems = append(s.Problems, "the daemon is starting or stopping")
	}
	return s
}

// selfCheck is the doctor report when appliance/doctor is not wired in:
// what the daemon itself can see.
func (d *daemon) selfCheck(ctx context.Context) api.DoctorReport {
	st := d.status(ctx)
	r := api.DoctorReport{}
	r.Steps = append(r.Steps, api.DoctorStep{Name: "daemon ready", OK: st.Ready,
		Fix: "see the daemon's log; `clauderond teardown` then restart"})
	r.Steps = append(r.Steps, api.DoctorStep{Name: "nftables enforcement", OK: st.Enforcement == api.EnforcementIntact,
		Detail: fmt.Sprint(st.Drift), Fix: "check that nothing else flushes nftables (nft list ruleset)"})
	names := slices.Sorted(maps.Keys(st.Requests))
	r.Steps = append(r.Steps, api.DoctorStep{Name: "audit decisions seen", OK: true, Detail: fmt.Sprint(names)})
	return r
}
