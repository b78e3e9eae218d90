package netfilter

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Fake is an in-memory Manager for tests of the appliance. It keeps the
// keys of the applied Ruleset as its "kernel", enforces the same
// sequencing as Kernel (see Manager), validates specs and ports exactly
// like Kernel, and lets tests inject drift, counters and failures.
// The zero value is ready to use; it is safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	applied  bool
	spec     Spec
	kernel   []string // keys currently "in the kernel"
	counters map[string]Counter
	failNext map[string]error
	calls    []string
}

var _ Manager = (*Fake)(nil)

// Apply validates spec, builds it and replaces the fake kernel state
// (counters reset, like a real re-apply).
func (f *Fake) Apply(ctx context.Context, spec Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "apply"); err != nil {
		return err
	}
	rs, err := Build(spec)
	if err != nil {
		return err
	}
	f.applied, f.spec, f.kernel = true, spec.withDefaults(), rs.Keys()
	f.counters = map[string]Counter{}
	for _, c := range rs.Comments() {
		f.counters[c] = Counter{Rule: c}
	}
	return nil
}

// Verify diffs the fake kernel against Build(spec).
func (f *Fake) Verify(ctx context.Context, spec Spec) (Drift, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.beginApplied(ctx, "verify", "verifying nftables ruleset"); err != nil {
		return Drift{}, err
	}
	rs, err := Build(spec)
	if err != nil {
		return Drift{}, fmt.Errorf("verifying nftables ruleset: %w", err)
	}
	return diffKeys(rs.Keys(), f.kernel), nil
}

// Teardown forgets everything; a second Teardown returns ErrNotApplied.
func (f *Fake) Teardown(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.beginApplied(ctx, "teardown", "tearing down nftables ruleset"); err != nil {
		return err
	}
	f.applied, f.spec, f.kernel, f.counters = false, Spec{}, nil, nil
	return nil
}

// SetPorts replaces the port set elements, keeping counters.
func (f *Fake) SetPorts(ctx context.Context, ports []Port) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.beginApplied(ctx, "setports", "setting bridge ports"); err != nil {
		return err
	}
	if err := f.spec.validatePorts(normalizePorts(ports)); err != nil {
		return fmt.Errorf("setting bridge ports: %w", err)
	}
	next := f.spec
	next.Ports = normalizePorts(ports)
	rs, err := Build(next)
	if err != nil {
		return fmt.Errorf("setting bridge ports: %w", err)
	}
	kept := slices.DeleteFunc(slices.Clone(f.kernel), func(k string) bool { return strings.HasPrefix(k, "element ") })
	for _, k := range rs.Keys() {
		if strings.HasPrefix(k, "element ") {
			kept = append(kept, k)
		}
	}
	f.spec, f.kernel = next, kept
	return nil
}

// Counters returns the counters of every rule, sorted by rule comment.
func (f *Fake) Counters(ctx context.Context) ([]Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.beginApplied(ctx, "counters", "reading nftables counters"); err != nil {
		return nil, err
	}
	out := make([]Counter, 0, len(f.counters))
	for _, c := range f.counters {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Counter) int { return strings.Compare(a.Rule, b.Rule) })
	return out, nil
}

// begin records the call and returns an injected or context error.
func (f *Fake) begin(ctx context.Context, op string) error {
	f.calls = append(f.calls, op)
	if err := f.failNext[op]; err != nil {
		delete(f.failNext, op)
		return err
	}
	return ctx.Err()
}

// beginApplied is begin for an operation that needs an applied ruleset:
// without one it fails with ErrNotApplied, wrapped in what the operation
// was doing.
func (f *Fake) beginApplied(ctx context.Context, op, doing string) error {
	if err := f.begin(ctx, op); err != nil {
		return err
	}
	if !f.applied {
		return fmt.Errorf("%s: %w", doing, ErrNotApplied)
	}
	return nil
}

// FailNext makes the next call of op ("apply", "verify", "teardown",
// "setports", "counters") return err.
func (f *Fake) FailNext(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext == nil {
		f.failNext = map[string]error{}
	}
	f.failNext[op] = err
}

// RemoveKey deletes one key (see Ruleset.Keys) from the fake kernel, as
// if someone deleted the rule, chain or element behind our back. It
// reports whether the key was present.
func (f *Fake) RemoveKey(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.kernel)
	f.kernel = slices.DeleteFunc(f.kernel, func(k string) bool { return k == key })
	return len(f.kernel) != n
}

// AddKey adds a foreign key to the fake kernel (an unexpected rule).
func (f *Fake) AddKey(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kernel = append(f.kernel, key)
}

// SetCounter sets the counter of the rule with the given comment.
func (f *Fake) SetCounter(rule string, packets, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.counters == nil {
		f.counters = map[string]Counter{}
	}
	f.counters[rule] = Counter{Rule: rule, Packets: packets, Bytes: bytes}
}

// Applied returns the last applied spec (with defaults and SetPorts
// updates) and whether a ruleset is applied.
func (f *Fake) Applied() (Spec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.spec, f.applied
}

// Calls returns the operations called so far, in order.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}
