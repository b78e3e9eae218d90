package netfilter

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Manager owns our tables in one network namespace. Kernel is the real
// one; Fake is the in-memory one with the same sequencing rules.
//
// Sequencing (identical for Kernel and Fake):
//   - Apply may be called any time; it replaces our tables atomically
//     (counters reset) and is idempotent.
//   - Verify, SetPorts and Counters before the first Apply of this Manager
//     (or after a Teardown) return ErrNotApplied.
//   - Teardown removes our tables if present; when none of them exists it
//     returns ErrNotApplied, so a second Teardown reports ErrNotApplied.
type Manager interface {
	// Apply makes the kernel match Build(spec) in one atomic batch.
	Apply(ctx context.Context, spec Spec) error
	// Verify reads the kernel back and reports what differs from spec
	// (spec.Ports included).
	Verify(ctx context.Context, spec Spec) (Drift, error)
	// Teardown deletes our tables and nothing else.
	Teardown(ctx context.Context) error
	// SetPorts replaces the port sets' elements in place (counters stay).
	SetPorts(ctx context.Context, ports []Port) error
	// Counters returns the packet and byte counts of every counted rule.
	Counters(ctx context.Context) ([]Counter, error)
}

// ErrNotApplied reports an operation that needs an applied ruleset.
var ErrNotApplied = errors.New("netfilter: ruleset not applied")

// Drift is the difference between the kernel and the desired ruleset.
// Entries read like "rule inet clauderon host_in clauderon:accept-tls".
type Drift struct {
	Missing    []string
	Unexpected []string
}

// Intact reports whether the kernel matches the desired ruleset.
func (d Drift) Intact() bool { return len(d.Missing) == 0 && len(d.Unexpected) == 0 }

func (d Drift) String() string {
	if d.Intact() {
		return "intact"
	}
	return fmt.Sprintf("missing: [%s]; unexpected: [%s]", strings.Join(d.Missing, ", "), strings.Join(d.Unexpected, ", "))
}

// Counter is the count of one rule, identified by its comment.
type Counter struct {
	Rule    string
	Packets uint64
	Bytes   uint64
}

// Keys lists the identities of everything in rs, the vocabulary of Drift:
// tables, chains (with type, hook and priority), rules by comment, sets
// and set elements.
func (rs Ruleset) Keys() []string {
	var out []string
	for _, t := range rs.Tables {
		tk := fmt.Sprintf("%s %s", t.Family, t.Name)
		out = append(out, "table "+tk)
		for _, s := range t.Sets {
			out = append(out, fmt.Sprintf("set %s %s", tk, s.Name))
			for _, e := range s.Elements {
				out = append(out, fmt.Sprintf("element %s %s %s", tk, s.Name, s.Kind.elementText(e)))
			}
		}
		for _, c := range t.Chains {
			out = append(out, chainKey(tk, c))
			for _, r := range c.Rules {
				out = append(out, ruleKey(tk, c.Name, r.Comment))
			}
		}
	}
	return out
}

func chainKey(tk string, c Chain) string {
	return fmt.Sprintf("chain %s %s (%s %s %d)", tk, c.Name, c.Type, c.Hook, c.Priority)
}

func ruleKey(tk, chain, comment string) string {
	return fmt.Sprintf("rule %s %s %s", tk, chain, comment)
}

// diffKeys compares desired and actual key lists, keeping their order.
func diffKeys(want, got []string) Drift {
	var d Drift
	wantSet, gotSet := setOf(want), setOf(got)
	for _, k := range want {
		if !gotSet[k] {
			d.Missing = append(d.Missing, k)
		}
	}
	for _, k := range got {
		if !wantSet[k] {
			d.Unexpected = append(d.Unexpected, k)
		}
	}
	return d
}

func setOf(keys []string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}
