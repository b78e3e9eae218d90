package appliance

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/injector"
)

// auditSink is where records go; Close flushes.
type auditSink interface {
	sink
	Close() error
}

// openAudit opens state_dir/audit.jsonl.
//
// TEMPORARY: a minimal JSON-lines writer until appliance/audit lands; it
// keeps the contract's field names so the switch changes nothing on disk.
func openAudit(cfg *config.Config, store *injector.Store, log *slog.Logger) (auditSink, error) {
	path := filepath.Join(cfg.StateDir, "audit.jsonl")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	return &jsonAudit{f: f, bw: bufio.NewWriter(f), scrub: store.Redact}, nil
}

type jsonAudit struct {
	mu    sync.Mutex
	f     *os.File
	bw    *bufio.Writer
	scrub func(string) string
}

type auditLine struct {
	TS           time.Time `json:"ts"`
	Container    string    `json:"container"`
	SrcIP        string    `json:"src_ip"`
	SNI          string    `json:"sni"`
	Host         string    `json:"host"`
	Method       string    `json:"method"`
	Path         string    `json:"path"`
	Status       int       `json:"status"`
	Decision     string    `json:"decision"`
	Rule         string    `json:"rule"`
	AuthInjected bool      `json:"auth_injected"`
	DurationMS   float64   `json:"duration_ms"`
	Error        string    `json:"error"`
	Kind         string    `json:"kind,omitempty"`
	Profile      string    `json:"profile,omitempty"`
	OrigDst      string    `json:"orig_dst,omitempty"`
}

func (a *jsonAudit) write(r record) {
	b, err := json.Marshal(auditLine{TS: r.TS.UTC(), Container: r.Container, SrcIP: r.SrcIP, SNI: r.SNI, Host: r.Host,
		Method: r.Method, Path: r.Path, Status: r.Status, Decision: r.Decision, Rule: r.Rule, AuthInjected: r.AuthInjected,
		DurationMS: float64(r.Duration.Microseconds()) / 1000, Error: r.Error, Kind: r.Kind, Profile: r.Profile, OrigDst: r.OrigDst})
	if err != nil {
		return
	}
	line := a.scrub(string(b))
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bw.WriteString(line + "\n")
	a.bw.Flush()
}

func (a *jsonAudit) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.bw.Flush(); err != nil {
		return err
	}
	if err := a.f.Sync(); err != nil {
		return err
	}
	return a.f.Close()
}
