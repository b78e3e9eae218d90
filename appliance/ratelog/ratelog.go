// Package ratelog is the daemon's one rate-limited log handler. The appliance
// hands a logger built on it to tlsmitm and dnsredir for their per-connection
// and per-query lines (a malformed request, a connection over the limit, a
// query's outcome, a panic serving one), so a scanning container or a
// failing upstream cannot flood the daemon's log or fill its disk. Lifecycle
// lines go to the plain logger and are never dropped; the audit log is not
// rate-limited.
//
// The budget is kept per component (the "component" attribute a part adds
// with With) and per level, so that one part's flood, or a flood of debug
// lines, never hides another part's lines or a rarer, more severe one: a
// container that fills the tlsmitm warnings with cheap refusals still
// cannot hide the error line (with its stack) of a panic it then triggers.
// The first line a bucket admits after dropping some carries their count
// under the key "suppressed".
package ratelog

import (
	"context"
	"log/slog"
	"sync"

	"golang.org/x/time/rate"
)

// SuppressedKey names the count of lines dropped before the one that carries it.
const SuppressedKey = "suppressed"

// Defaults, used for zero Config fields: per component and level, a steady
// 20 lines a second, bursts of 50.
const (
	DefaultPerSecond = 20
	DefaultBurst     = 50
)

// Config sizes each budget. Zero fields take the defaults.
type Config struct {
	PerSecond float64
	Burst     int
}

// bucketKey names one budget: the components and levels are the code's, so
// the set stays small whatever clients send.
type bucketKey struct {
	component string
	level     slog.Level
}

// bucket is one budget and what it dropped since it last admitted a line.
type bucket struct {
	limiter    *rate.Limiter
	suppressed int64
}

// budgets is the state every derived handler shares.
type budgets struct {
	cfg Config

	mu      sync.Mutex
	buckets map[bucketKey]*bucket
}

// admit reports whether a line of key may be written now and how many of
// key's were dropped since the last one that was.
func (b *budgets) admit(key bucketKey) (ok bool, suppressed int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.buckets[key]
	if bk == nil {
		bk = &bucket{limiter: rate.NewLimiter(rate.Limit(b.cfg.PerSecond), b.cfg.Burst)}
		b.buckets[key] = bk
	}
	if !bk.limiter.Allow() {
		bk.suppressed++
		return false, 0
	}
	suppressed, bk.suppressed = bk.suppressed, 0
	return true, suppressed
}

// Handler wraps another slog.Handler and drops the lines over their budget.
type Handler struct {
	next      slog.Handler
	b         *budgets
	component string // from With("component", …)
}

var _ slog.Handler = (*Handler)(nil)

// New returns a Handler that writes to next within cfg's budgets (one per
// component and level).
func New(next slog.Handler, cfg Config) *Handler {
	if cfg.PerSecond <= 0 {
		cfg.PerSecond = DefaultPerSecond
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	return &Handler{next: next, b: &budgets{cfg: cfg, buckets: make(map[bucketKey]*bucket)}}
}

// Enabled reports what next does: a line below the level spends no budget.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle writes r unless its budget is spent; the line written after
// dropped ones of the same budget says how many.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	ok, suppressed := h.b.admit(bucketKey{h.component, r.Level})
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int64(SuppressedKey, suppressed))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a Handler with attrs that shares h's budgets; a
// "component" attribute selects that component's.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	component := h.component
	for _, a := range attrs {
		if a.Key == "component" {
			component = a.Value.String()
		}
	}
	return &Handler{next: h.next.WithAttrs(attrs), b: h.b, component: component}
}

// WithGroup returns a Handler with a group that shares h's budgets.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), b: h.b, component: h.component}
}
