package netfilter

import (
	"fmt"
	"strings"
)

// Family is an nftables address family we use.
type Family string

// The three families of our tables.
const (
	FamilyInet   Family = "inet"
	FamilyBridge Family = "bridge"
	FamilyARP    Family = "arp"
)

// Ruleset is the complete desired state: our tables with their sets,
// chains and rules, as data. Build makes one; Kernel applies one; String
// renders it as nft-style text.
type Ruleset struct {
	Tables []Table
}

// Table is one of our tables.
type Table struct {
	Family Family
	Name   string
	Sets   []Set
	Chains []Chain
}

// SetKind is the key type of a named set.
type SetKind int

// Named set key types.
const (
	// SetIfNames: type ifname.
	SetIfNames SetKind = iota + 1
	// SetIfNameAddrs: type ifname . ipv4_addr.
	SetIfNameAddrs
	// SetAddrs: type ipv4_addr.
	SetAddrs
)

// Set is a named set whose elements SetPorts replaces in place.
type Set struct {
	Name     string
	Kind     SetKind
	Elements []Port // only IfName for SetIfNames, only Addr for SetAddrs
}

// Chain is a base chain.
type Chain struct {
	Name     string
	Type     string // "filter" or "nat"
	Hook     string // "prerouting", "input", "forward", "output", "postrouting"
	Priority int
	Rules    []Rule
}

// Rule is matches, optional counter and log, then a verdict. Comment is
// the rule's identity ("clauderon:..."), unique within its table.
type Rule struct {
	Comment string
	Matches []Match
	Counter bool
	Log     *Log
	Verdict Verdict
}

// Log is an NFLOG action with a prefix.
type Log struct {
	Prefix string
	Group  uint16
}

// Comments lists every rule comment of rs, in order.
func (rs Ruleset) Comments() []string {
	var out []string
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				out = append(out, r.Comment)
			}
		}
	}
	return out
}

// String renders rs in nft syntax (close to `nft list table`).
func (rs Ruleset) String() string {
	var b strings.Builder
	for i, t := range rs.Tables {
		if i > 0 {
			b.WriteString("\n")
		}
		t.render(&b)
	}
	return b.String()
}

func (t Table) render(b *strings.Builder) {
	fmt.Fprintf(b, "table %s %s {\n", t.Family, t.Name)
	for _, s := range t.Sets {
		s.render(b)
	}
	for _, c := range t.Chains {
		fmt.Fprintf(b, "\tchain %s {\n", c.Name)
		fmt.Fprintf(b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.Type, c.Hook, priorityText(t.Family, c.Priority))
		for _, r := range c.Rules {
			fmt.Fprintf(b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
}

func (s Set) render(b *strings.Builder) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", s.Name, s.Kind)
	if len(s.Elements) > 0 {
		elems := make([]string, len(s.Elements))
		for i, e := range s.Elements {
			elems[i] = s.Kind.elementText(e)
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ",\n\t\t\t     "))
	}
	b.WriteString("\t}\n")
}

func (k SetKind) String() string {
	switch k {
	case SetIfNames:
		return "ifname"
	case SetIfNameAddrs:
		return "ifname . ipv4_addr"
	case SetAddrs:
		return "ipv4_addr"
	}
	return fmt.Sprintf("SetKind(%d)", int(k))
}

func (k SetKind) elementText(p Port) string {
	switch k {
	case SetIfNameAddrs:
		return fmt.Sprintf("%q . %s", p.IfName, p.Addr)
	case SetAddrs:
		return p.Addr.String()
	}
	return fmt.Sprintf("%q", p.IfName)
}

// String renders the rule as one nft statement line.
func (r Rule) String() string {
	parts := make([]string, 0, len(r.Matches)+4)
	for _, m := range r.Matches {
		parts = append(parts, m.String())
	}
	if r.Counter {
		parts = append(parts, "counter")
	}
	if r.Log != nil {
		parts = append(parts, fmt.Sprintf("log prefix %q group %d", r.Log.Prefix, r.Log.Group))
	}
	if r.Verdict != nil {
		parts = append(parts, r.Verdict.String())
	}
	parts = append(parts, fmt.Sprintf("comment %q", r.Comment))
	return strings.Join(parts, " ")
}

// priorityText names a priority the way nft prints it.
func priorityText(f Family, p int) string {
	named := map[int]string{-300: "raw", -150: "mangle", -100: "dstnat", 0: "filter", 50: "security", 100: "srcnat"}
	switch f {
	case FamilyBridge:
		named = map[int]string{-300: "dstnat", -200: "filter", 0: "out", 300: "srcnat"}
	case FamilyARP:
		named = map[int]string{0: "filter"}
	}
	if n, ok := named[p]; ok {
		return n
	}
	best, bestD := "", 0
	for base, n := range named {
		d := p - base
		if abs(d) < 50 && (best == "" || abs(d) < abs(bestD)) {
			best, bestD = n, d
		}
	}
	switch {
	case best == "":
		return fmt.Sprint(p)
	case bestD < 0:
		return fmt.Sprintf("%s - %d", best, -bestD)
	default:
		return fmt.Sprintf("%s + %d", best, bestD)
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
