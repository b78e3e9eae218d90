package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/audit"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/injector"
)

// auditSink is where records go; Close flushes and fsyncs.
type auditSink interface {
	sink
	Close() error
}

// auditVerifier is an auditSink that can check its chain.
type auditVerifier interface {
	verify() (api.AuditVerification, error)
}

// auditKeyName is the chain key in the state dir: 0600, created on first
// use, never logged and never mounted into a container.
const auditKeyName = "audit.key"

// openAudit opens state_dir/audit.jsonl with the credential store's
// redactor as the scrubber, so no known credential value can reach a line,
// chained with state_dir/audit.key and with each source's line budget.
func openAudit(cfg *config.Config, store *injector.Store, log *slog.Logger) (auditSink, error) {
	key, err := audit.LoadOrCreateKey(filepath.Join(cfg.StateDir, auditKeyName))
	if err != nil {
		return nil, err
	}
	path := filepath.Join(cfg.StateDir, "audit.jsonl")
	w, err := audit.Open(path, auditOptions(cfg.Audit, store.Redact, key, log))
	if err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	return auditWriter{w}, nil
}

// auditOptions maps the audit: section to writer options; the config's 0
// means "off" where the writer's 0 means "default".
func auditOptions(c config.AuditConfig, scrub func(string) string, key *audit.Key, log *slog.Logger) audit.Options {
	o := audit.Options{MaxBytes: c.MaxBytes, MaxBackups: c.MaxBackups, Scrub: scrub, Key: key, Logger: log,
		RatePerSecond: c.RatePerSecond, Burst: c.Burst}
	if o.RatePerSecond == 0 {
		o.RatePerSecond = -1
	}
	return o
}

type auditWriter struct{ w *audit.Writer }

func (a auditWriter) Close() error { return a.w.Close() }

func (a auditWriter) write(r record) { a.w.Write(toAudit(r)) }

func (a auditWriter) verify() (api.AuditVerification, error) {
	res, err := a.w.Verify()
	if err != nil {
		return api.AuditVerification{}, err
	}
	return toAPIVerification(res), nil
}

func toAPIVerification(res audit.VerifyResult) api.AuditVerification {
	v := api.AuditVerification{OK: res.OK, Files: res.Files, Lines: res.Lines, Unchained: res.Unchained}
	if b := res.FirstBad; b != nil {
		v.FirstBad = &api.AuditBadLine{File: b.File, Line: b.Line, Reason: b.Reason}
	}
	return v
}

// verifyAudit checks the running daemon's audit chain.
func (d *daemon) verifyAudit(context.Context) (api.AuditVerification, error) {
	v, ok := d.audit.(auditVerifier)
	if !ok {
		return api.AuditVerification{}, fmt.Errorf("%w: the audit log is not open", api.ErrUnavailable)
	}
	res, err := v.verify()
	if errors.Is(err, audit.ErrNotChained) {
		return res, fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	return res, err
}

func toAudit(r record) audit.Record {
	return audit.Record{TS: r.TS, Container: r.Container, ContainerID: r.ContainerID, Profile: r.Profile, Owner: r.Owner, Kind: r.Kind,
		Namespace: r.Namespace, Pod: r.Pod, ServiceAccount: r.SA,
		SrcIP: r.SrcIP, OrigDst: r.OrigDst, SNI: r.SNI, Host: r.Host, Method: r.Method, Path: r.Path, Status: r.Status,
		Decision: r.Decision, Rule: r.Rule, AuthInjected: r.AuthInjected,
		DurationMS: float64(r.Duration.Microseconds()) / 1000, BytesIn: r.BytesIn, BytesOut: r.BytesOut,
		QType: r.QType, RCode: r.RCode, Error: r.Error, PlaceholderFrom: r.PlaceholderFrom}
}
