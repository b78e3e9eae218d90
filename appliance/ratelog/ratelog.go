// Package ratelog is the daemon's one rate-limited log handler. The appliance
// hands a logger built on it to tlsmitm and dnsredir for their per-connection
// and per-query lines (a malformed request, a connection over the limit, a
// query's outcome), so a scanning container or a failing upstream cannot
// flood the daemon's log or fill its disk. Lifecycle lines go to the plain
// logger and are never dropped; the audit log is never rate-limited.
//
// Every logger derived from one Handler (With, WithGroup) shares its budget:
// the limit is the daemon's, whichever part writes. The first line admitted
// after some were dropped carries their count under the key "suppressed".
package ratelog

import (
	"context"
	"log/slog"
	"sync"

	"golang.org/x/time/rate"
)

// SuppressedKey names the count of lines dropped before the one that carries it.
const SuppressedKey = "suppressed"

// Defaults, used for zero Config fields: a steady 20 lines a second, bursts of 50.
const (
	DefaultPerSecond = 20
	DefaultBurst     = 50
)

// Config sizes the budget. Zero fields take the defaults.
type Config struct {
	PerSecond float64
	Burst     int
}

// budget is the state every derived handler shares.
type budget struct {
	limiter *rate.Limiter

	mu         sync.Mutex
	suppressed int64
}

// admit reports whether a line may be written now and how many were dropped
// since the last one that was.
func (b *budget) admit() (ok bool, suppressed int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.limiter.Allow() {
		b.suppressed++
		return false, 0
	}
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}

// Handler wraps another slog.Handler and drops the lines over its budget.
type Handler struct {
	next slog.Handler
	b    *budget
}

var _ slog.Handler = (*Handler)(nil)

// New returns a Handler that writes to next within cfg's budget.
func New(next slog.Handler, cfg Config) *Handler {
	if cfg.PerSecond <= 0 {
		cfg.PerSecond = DefaultPerSecond
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	return &Handler{next: next, b: &budget{limiter: rate.NewLimiter(rate.Limit(cfg.PerSecond), cfg.Burst)}}
}

// Enabled reports what next does: a line below the level spends no budget.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle writes r unless the budget is spent; the line written after dropped
// ones says how many.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	ok, suppressed := h.b.admit()
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int64(SuppressedKey, suppressed))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a Handler with attrs that shares h's budget.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(attrs), b: h.b}
}

// WithGroup returns a Handler with a group that shares h's budget.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), b: h.b}
}
