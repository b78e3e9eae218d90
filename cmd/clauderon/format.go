package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/clauderon/clauderond/appliance/api"
)

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// writeStatus prints the human status. A degraded enforcement is printed
// first and loudly.
func writeStatus(w io.Writer, st api.Status) {
	if st.Enforcement != api.EnforcementIntact {
		fmt.Fprintf(w, "!!! ENFORCEMENT %s: container traffic may not be fully controlled\n", strings.ToUpper(orUnknown(st.Enforcement)))
		for _, d := range st.Drift {
			fmt.Fprintf(w, "!!!   drift: %s\n", d)
		}
		fmt.Fprintln(w, "!!!   fix: sudo systemctl reload clauderond   (then: clauderon doctor)")
	}
	state := "READY"
	if !st.Ready {
		state = "NOT READY"
	}
	fmt.Fprintf(w, "clauderond %s: %s\n", orUnknown(st.Version), state)
	for _, p := range st.Problems {
		fmt.Fprintf(w, "  problem:     %s\n", p)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s:\t%s\n", k, v) }
	row("enforcement", fmt.Sprintf("%s (egress mode %s)", orUnknown(st.Enforcement), orUnknown(st.Mode)))
	n := st.Network
	row("network", fmt.Sprintf("%s (bridge %s, subnet %s, gateway %s)", n.Name, n.Bridge, n.Subnet, n.Gateway))
	row("state dir", st.StateDir)
	row("socket", st.Socket)
	row("listeners", joinOr(listeners(st.Listeners), "none"))
	row("CA", fmt.Sprintf("%s (fingerprint %s)", st.CA.Path, st.CA.Fingerprint))
	row("credentials", joinOr(credentials(st.Credentials), "none — set CLAUDE_CODE_OAUTH_TOKEN for the daemon or write <state_dir>/secrets/anthropic"))
	row("containers", joinOr(containers(st.Containers), "none"))
	row("requests", joinOr(counts(st.Requests), "none yet"))
	_ = tw.Flush()
	if len(st.Counters) > 0 {
		fmt.Fprintln(w, "  counters:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		for _, c := range st.Counters {
			fmt.Fprintf(tw, "    %s\t%d pkts\t%d bytes\t\n", c.Rule, c.Packets, c.Bytes)
		}
		_ = tw.Flush()
	}
}

func joinOr(items []string, empty string) string {
	if len(items) == 0 {
		return empty
	}
	return strings.Join(items, "\n\t")
}

func listeners(ls []api.Listener) []string {
	var out []string
	for _, l := range ls {
		ok := "ok"
		if !l.OK {
			ok = "DOWN"
		}
		out = append(out, fmt.Sprintf("%s %s %s", l.Name, l.Address, ok))
	}
	return out
}

func credentials(cs []api.Credential) []string {
	var out []string
	for _, c := range cs {
		if !c.Present {
			out = append(out, fmt.Sprintf("%s/%s: missing", c.Profile, c.Name))
			continue
		}
		out = append(out, fmt.Sprintf("%s/%s: %s from %s (fingerprint %s)", c.Profile, c.Name, c.Kind, c.Source, c.Fingerprint))
	}
	return out
}

func containers(cs []api.Container) []string {
	var out []string
	for _, c := range cs {
		line := fmt.Sprintf("%s %s profile %s", c.Name, c.IP, c.Profile)
		if len(c.OtherNetworks) > 0 {
			line += " REFUSED: also on " + strings.Join(c.OtherNetworks, ", ")
		}
		out = append(out, line)
	}
	return out
}

func counts(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
	}
	if len(out) == 0 {
		return nil
	}
	return []string{strings.Join(out, " ")}
}

func writeSessions(w io.Writer, ss []api.Session) error {
	if len(ss) == 0 {
		_, err := fmt.Fprintln(w, "no sessions (create one: clauderon create --name NAME --prompt PROMPT)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tAGENT\tMODE\tPROFILE\tIMAGE\tCREATED\tPROMPT")
	for _, s := range ss {
		mode := "interactive"
		if s.Print {
			mode = "print"
		}
		state := s.State
		if state == "exited" {
			state = fmt.Sprintf("exited(%d)", s.ExitCode)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, state, s.Agent, mode, s.Profile, s.Image,
			s.CreatedAt.UTC().Format(time.DateTime), truncate(s.Prompt, 40))
	}
	return tw.Flush()
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func writeDoctor(w io.Writer, rep api.DoctorReport) {
	failed := 0
	for _, s := range rep.Steps {
		mark := "ok  "
		if !s.OK {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "[%s] %s", mark, s.Name)
		if s.Detail != "" {
			fmt.Fprintf(w, ": %s", s.Detail)
		}
		fmt.Fprintln(w)
		if !s.OK && s.Fix != "" {
			fmt.Fprintf(w, "       fix: %s\n", s.Fix)
		}
	}
	if failed == 0 {
		fmt.Fprintf(w, "all %d checks passed\n", len(rep.Steps))
	} else {
		fmt.Fprintf(w, "%d of %d checks failed\n", failed, len(rep.Steps))
	}
}

// auditRecord is the subset of an audit.jsonl line shown to humans.
type auditRecord struct {
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
}

// formatAuditLine renders one JSON audit line; unparsable lines pass
// through. Every field a container can influence is escaped (termSafe):
// the line is one terminal line whatever the record holds.
func formatAuditLine(line []byte) string {
	var r auditRecord
	if err := json.Unmarshal(line, &r); err != nil {
		return termSafe(strings.TrimSpace(string(line)))
	}
	who := r.Container
	if who == "" {
		who = "?" + r.SrcIP
	}
	host := r.Host
	if host == "" {
		host = r.SNI
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-20s %-11s %s", r.TS.UTC().Format("2006-01-02T15:04:05.000Z"), termSafe(who), termSafe(r.Decision), termSafe(host))
	if r.Method != "" {
		fmt.Fprintf(&b, " %s %s", termSafe(r.Method), termSafe(r.Path))
	}
	if r.Status != 0 {
		fmt.Fprintf(&b, " %d", r.Status)
	}
	if r.AuthInjected {
		b.WriteString(" auth=injected")
	}
	if r.Rule != "" {
		fmt.Fprintf(&b, " rule=%s", termSafe(r.Rule))
	}
	fmt.Fprintf(&b, " %.1fms", r.DurationMS)
	if r.Error != "" {
		fmt.Fprintf(&b, ` error="%s"`, strings.ReplaceAll(termSafe(r.Error), `"`, `\"`))
	}
	return b.String()
}

// termSafe escapes what could steer a terminal or hide text: invalid
// UTF-8 (\xNN), C0 controls, DEL and C1 controls (\x1b, \u009b), and
// every other rune unicode does not call printable, which includes the
// bidi and format characters (\u202e, \u2066, \u200b), the line and
// paragraph separators and non-ASCII spaces. A backslash is doubled so an
// escape cannot be forged.
func termSafe(s string) string {
	safe := true
	for _, r := range s {
		if r == '\\' || r == utf8.RuneError || !unicode.IsPrint(r) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x80 && !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case !unicode.IsPrint(r):
			if r > 0xffff {
				fmt.Fprintf(&b, `\U%08x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
