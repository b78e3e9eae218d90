package appliance

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/clauderon/clauderond/appliance/audit"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/injector"
)

// auditSink is where records go; Close flushes and fsyncs.
type auditSink interface {
	sink
	Close() error
}

// openAudit opens state_dir/audit.jsonl with the credential store's
// redactor as the scrubber, so no known credential value can reach a line.
func openAudit(cfg *config.Config, store *injector.Store, log *slog.Logger) (auditSink, error) {
	path := filepath.Join(cfg.StateDir, "audit.jsonl")
	w, err := audit.Open(path, audit.Options{MaxBytes: cfg.Audit.MaxBytes, MaxBackups: cfg.Audit.MaxBackups,
		Scrub: store.Redact, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	return auditWriter{w}, nil
}

type auditWriter struct{ w *audit.Writer }

func (a auditWriter) Close() error { return a.w.Close() }

func (a auditWriter) write(r record) { a.w.Write(toAudit(r)) }

func toAudit(r record) audit.Record {
	return audit.Record{TS: r.TS, Container: r.Container, ContainerID: r.ContainerID, Profile: r.Profile, Kind: r.Kind,
		SrcIP: r.SrcIP, OrigDst: r.OrigDst, SNI: r.SNI, Host: r.Host, Method: r.Method, Path: r.Path, Status: r.Status,
		Decision: r.Decision, Rule: r.Rule, AuthInjected: r.AuthInjected,
		DurationMS: float64(r.Duration.Microseconds()) / 1000, BytesIn: r.BytesIn, BytesOut: r.BytesOut,
		QType: r.QType, RCode: r.RCode, Error: r.Error}
}
