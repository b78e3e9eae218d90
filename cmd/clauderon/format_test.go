package main

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
)

// evilStrings are field values that would steer a terminal printed raw.
var evilStrings = []string{
	"/x\x1b[1A\x1b[2K\r\n2026-11-28T21:00:00.000Z agent-1 intercept api.github.com GET /fine 200", // CSI erase + forged line
	"\x1b]0;owned\x07\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\",                                // OSC title and hyperlink
	"\u009b2J\u009d0;c1 osc\u009c\u0085next",                                                      // C1 CSI, OSC, ST, NEL
	"safe\u202eevil\u2066\u2069\u200b\u200f\ufeff\u2028\u2029\U000e0041",                          // bidi, zero-width, separators, tag
	"del\x7f\x08\x08bs\ttab\x00nul",                                                               // DEL, backspace, tab, NUL
	"\\x1b already looks escaped",                                                                 // a backslash cannot forge an escape
	string([]byte{0xff, 0xfe, 0xc2}),                                                              // invalid UTF-8
}

// assertTerminalSafe fails on any raw control, C1, bidi/format or
// separator character, and on a line count other than want.
func assertTerminalSafe(t *testing.T, out string, want int) {
	t.Helper()
	if n := strings.Count(out, "\n"); n != want || !strings.HasSuffix(out, "\n") {
		t.Errorf("%d output lines, want %d (one per record):\n%s", n, want, out)
	}
	for i, r := range strings.TrimSuffix(out, "\n") {
		if r == '\n' {
			continue
		}
		if !unicode.IsPrint(r) { // U+FFFD (what JSON makes of invalid UTF-8) is printable
			t.Fatalf("raw %U at byte %d of the output:\n%q", r, i, out)
		}
	}
}

func TestFormatAuditLine_EscapesEveryField(t *testing.T) {
	for _, evil := range evilStrings {
		for _, field := range []string{"container", "src_ip", "sni", "host", "method", "path", "decision", "rule", "error"} {
			rec := map[string]any{"ts": "2026-11-28T21:00:00Z", "status": 200, "method": "GET", field: evil}
			b, _ := json.Marshal(rec)
			assertTerminalSafe(t, formatAuditLine(b)+"\n", 1)
		}
	}
	got := formatAuditLine([]byte(`{"container":"a\u001b[2Kb","method":"GET","path":"/x\u202e\\y","decision":"intercept","error":"say \"hi\"\r\n"}`))
	for _, want := range []string{`a\x1b[2Kb`, `/x\u202e\\y`, `error="say \"hi\"\x0d\x0a"`} {
		if !strings.Contains(got, want) {
			t.Errorf("formatAuditLine = %s, want it to contain %s", got, want)
		}
	}
}

func TestTermSafe_LeavesPrintableTextAlone(t *testing.T) {
	for _, s := range []string{"", "api.anthropic.com", "/v1/messages", "héllo wörld 日本 ✓", "a b"} {
		if got := termSafe(s); got != s {
			t.Errorf("termSafe(%q) = %q", s, got)
		}
	}
}
