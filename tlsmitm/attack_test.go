package tlsmitm

// Attacks from a review of the intercept path, each performed against the
// real terminator with the real injector package (through the same kind of
// adapter appliance uses) and an upstream that echoes everything it
// receives, Authorization included, the way a TRACE-echoing server does.
// Each test fails if the attack works again.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clauderon/clauderond/injector"
)

// realCredential is what the real injector injects; it contains realToken,
// so TestMain's check also covers it in logs and audit events.
const realCredential = "sk-ant-oat01-" + realToken

// realInjector adapts *injector.Injector the way appliance does.
type realInjector struct{ inj *injector.Injector }

func (a realInjector) Apply(req *http.Request, host string, c Client) (string, bool, error) {
	applied, err := a.inj.Apply(req, host, c.Profile)
	switch {
	case err == nil:
	case errors.Is(err, injector.ErrHostMismatch):
		err = fmt.Errorf("%w: %v", ErrSNIMismatch, err)
	case errors.Is(err, injector.ErrRequestDenied), errors.Is(err, injector.ErrNoRule):
		err = fmt.Errorf("%w: %v", ErrForbidden, err)
	}
	return applied.Rule, applied.Injected, err
}

func (a realInjector) RedactResponse(host string, h http.Header) { a.inj.RedactResponse(host, h) }

// attackRules: api.anthropic.com denies key minting and /admin; the
// wildcard host used by the allow test reaches only GET /ok.
var attackRules = []injector.Rule{
	{Host: apiHost, Credential: "anthropic", Format: injector.FormatAnthropic, Strip: []string{"Authorization", "X-Api-Key"},
		Deny: []string{"POST /v1/keys", "/admin"}},
	{Host: "anything.intercept.test", Credential: "anthropic", Format: injector.FormatAnthropic, Allow: []string{"GET /ok"}},
	{Host: "git.intercept.test", Credential: "anthropic", Format: injector.FormatAnthropic, Push: []string{"acme/app"}},
}

// echoAll answers with the request line and every header it received,
// and counts requests.
func echoAll(hits *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s %s\r\n", r.Method, r.RequestURI, r.Proto)
		r.Header.Write(w)
	})
}

// newAttackHarness is the harness with the real injector and an echoing
// upstream.
func newAttackHarness(t *testing.T, hits *atomic.Int32) *harness {
	t.Helper()
	store, err := injector.NewStore(injector.StoreOptions{Environ: func() []string {
		return []string{"CLAUDE_CODE_OAUTH_TOKEN=" + realCredential}
	}})
	if err != nil {
		t.Fatal(err)
	}
	inj, err := injector.New(attackRules, store, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return newHarness(t, harnessOpts{handler: echoAll(hits), mutate: func(c *Config) { c.Injector = realInjector{inj} }})
}

// do sends method and target (kept as spelled) to host through the proxy.
func (h *harness) do(t *testing.T, h2 bool, method, host, target string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+host+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = "//" + host + target // sent as spelled, not re-encoded
	req.Header.Set("Authorization", "Bearer "+placeholder)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.client(h2).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

var protocols = []struct {
	name string
	h2   bool
}{{"http1.1", false}, {"h2", true}}

// TestAttack_TraceEchoNeverReturnsTheCredential: TRACE and TRACK used to be
// forwarded with the real credential injected, and an upstream echoing
// TRACE returned it in the body. They are refused with 405 before anything
// is injected, audited as deny, and the upstream never sees them.
func TestAttack_TraceEchoNeverReturnsTheCredential(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			var hits atomic.Int32
			h := newAttackHarness(t, &hits)
			// The echo is real: an ordinary request returns the credential
			// the upstream received, so the check below is not vacuous.
			if _, body := h.do(t, p.h2, "POST", apiHost, "/v1/messages"); !strings.Contains(body, realCredential) {
				t.Fatalf("control request: the echoing upstream did not see the credential: %q", body)
			}
			h.rec.next(t)
			for _, m := range []string{"TRACE", "TRACK", "trace"} {
				before := hits.Load()
				resp, body := h.do(t, p.h2, m, apiHost, "/v1/messages")
				if strings.Contains(body, realToken) || strings.Contains(fmt.Sprint(resp.Header), realToken) {
					t.Fatalf("%s: the credential came back to the client: %q", m, body)
				}
				if resp.StatusCode != http.StatusMethodNotAllowed || hits.Load() != before {
					t.Errorf("%s: status %d, upstream requests %d; want 405 and none", m, resp.StatusCode, hits.Load()-before)
				}
				ev := h.rec.next(t)
				if ev.Decision != Deny || ev.Status != 405 || ev.AuthInjected {
					t.Errorf("%s: audit event = %+v, want deny 405 without injection", m, ev)
				}
			}
		})
	}
}

// TestAttack_TraceRefusedWhateverTheInjector: the terminator refuses TRACE
// and TRACK itself, before the Injector runs, so an Injector that would
// inject for any method (the test double does) never gets the chance.
func TestAttack_TraceRefusedWhateverTheInjector(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			var hits atomic.Int32
			h := newHarness(t, harnessOpts{handler: echoAll(&hits)})
			for _, m := range []string{"TRACE", "TRACK"} {
				resp, body := h.do(t, p.h2, m, apiHost, "/")
				if ev := h.rec.next(t); resp.StatusCode != 405 || hits.Load() != 0 || strings.Contains(body, realToken) || ev.AuthInjected {
					t.Errorf("%s: status %d, upstream requests %d, event %+v; want 405, none, nothing injected", m, resp.StatusCode, hits.Load(), ev)
				}
			}
		})
	}
}

// TestAttack_H2ConnectRefused: an h2 CONNECT reaches the handler (net/http's
// h2 server lets it through); it is refused like TRACE.
func TestAttack_H2ConnectRefused(t *testing.T) {
	var hits atomic.Int32
	h := newAttackHarness(t, &hits)
	pr, pw := io.Pipe()
	defer pw.Close()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Scheme: "https", Host: apiHost}, Host: apiHost,
		Header: http.Header{"Authorization": {"Bearer " + placeholder}}, Body: pr}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := h.client(true).Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("answered over %s, want h2", resp.Proto)
	}
	if resp.StatusCode != http.StatusMethodNotAllowed || hits.Load() != 0 || strings.Contains(string(body), realToken) {
		t.Errorf("CONNECT: status %d, upstream requests %d, body %q; want 405, none, no credential", resp.StatusCode, hits.Load(), body)
	}
	if ev := h.rec.next(t); ev.Decision != Deny || ev.AuthInjected {
		t.Errorf("audit event = %+v, want deny without injection", ev)
	}
}

// TestAttack_DenyListSpellingsRefused: each spelling of a denied request
// used to reach the upstream with the real credential. Every one is now
// refused with 403 on both protocols, and the upstream never sees it.
func TestAttack_DenyListSpellingsRefused(t *testing.T) {
	attacks := []struct {
		name, method, target string
		hdr                  []string
	}{
		{"lower_case_method", "post", "/v1/keys", nil},
		{"upper_case_path", "POST", "/V1/KEYS", nil},
		{"matrix_parameter", "POST", "/v1/keys;x", nil},
		{"extension", "POST", "/v1/keys.json", nil},
		{"double_slash", "POST", "/v1//keys", nil},
		{"dot_segment", "POST", "/v1/./keys", nil},
		{"dot_dot", "POST", "/x/../v1/keys", nil},
		{"encoded_slash", "POST", "/v1%2Fkeys", nil},
		{"encoded_slash_below_admin", "GET", "/admin%2fusers", nil},
		{"double_encoded_slash", "POST", "/v1%252Fkeys", nil},
		{"method_override_query", "POST", "/v1/messages?_method=DELETE", nil},
		{"method_override_header", "POST", "/v1/messages", []string{"X-HTTP-Method-Override", "DELETE"}},
		{"x_http_method", "POST", "/v1/messages", []string{"X-HTTP-Method", "DELETE"}},
		{"x_method_override", "POST", "/v1/messages", []string{"X-Method-Override", "DELETE"}},
		{"x_original_url", "GET", "/v1/messages", []string{"X-Original-URL", "/v1/keys"}},
		{"x_rewrite_url", "GET", "/v1/messages", []string{"X-Rewrite-URL", "/admin"}},
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			var hits atomic.Int32
			h := newAttackHarness(t, &hits)
			for _, a := range attacks {
				resp, body := h.do(t, p.h2, a.method, apiHost, a.target, a.hdr...)
				ev := h.rec.next(t)
				if strings.Contains(body, realToken) || hits.Load() != 0 {
					t.Fatalf("%s: %s %s reached the upstream with the credential: %q", a.name, a.method, a.target, body)
				}
				if resp.StatusCode != http.StatusForbidden || ev.AuthInjected {
					t.Errorf("%s: status %d, event %+v; want 403, nothing injected", a.name, resp.StatusCode, ev)
				}
			}
			if _, body := h.do(t, p.h2, "POST", apiHost, "/v1/messages"); !strings.Contains(body, realCredential) {
				t.Errorf("an allowed request did not get the credential: %q", body)
			}
		})
	}
}

// TestAttack_AllowListOnlyListedEndpoints: a rule with an allow list sends
// its credential to the listed endpoints only.
func TestAttack_AllowListOnlyListedEndpoints(t *testing.T) {
	const host = "anything.intercept.test"
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			var hits atomic.Int32
			h := newAttackHarness(t, &hits)
			for _, target := range []string{"/other", "/ok/../other", "/ok%2F..%2Fother", "/"} {
				resp, body := h.do(t, p.h2, "GET", host, target)
				h.rec.next(t)
				if resp.StatusCode != http.StatusForbidden || hits.Load() != 0 || strings.Contains(body, realToken) {
					t.Fatalf("GET %s: status %d, upstream requests %d; want 403 and none", target, resp.StatusCode, hits.Load())
				}
			}
			if resp, body := h.do(t, p.h2, "GET", host, "/ok"); resp.StatusCode != 200 || !strings.Contains(body, realCredential) {
				t.Errorf("GET /ok: status %d body %q, want the credential injected", resp.StatusCode, body)
			}
		})
	}
}

// TestAudit_ClientFieldsBoundedAndAsSent: the audit path is the path as
// received (percent-encoding kept, query cut), and a long one is cut to
// 512 bytes with a marker.
func TestAudit_ClientFieldsBoundedAndAsSent(t *testing.T) {
	long := "/v1/" + strings.Repeat("a", 4000)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			var hits atomic.Int32
			h := newAttackHarness(t, &hits)
			h.do(t, p.h2, "GET", apiHost, "/v1/a%2Fb%20c?secret=1")
			if ev := h.rec.next(t); ev.Path != "/v1/a%2Fb%20c" {
				t.Errorf("audit path %q, want the path as sent, /v1/a%%2Fb%%20c", ev.Path)
			}
			h.do(t, p.h2, "GET", apiHost, long)
			ev := h.rec.next(t)
			if len(ev.Path) > maxAuditField+len(truncatedMark) || !strings.HasSuffix(ev.Path, truncatedMark) || !strings.HasPrefix(long, strings.TrimSuffix(ev.Path, truncatedMark)) {
				t.Errorf("audit path of a %d-byte path: %d bytes %q…, want at most %d ending in %q", len(long), len(ev.Path), ev.Path[:min(40, len(ev.Path))], maxAuditField+len(truncatedMark), truncatedMark)
			}
		})
	}
}

func TestAuditField(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/v1/messages", "/v1/messages"},
		{"a\x00b\xffc", `a\x00b\xffc`},
		{strings.Repeat("x", 600), strings.Repeat("x", 512) + truncatedMark},
		{strings.Repeat("x", 510) + "\x01", strings.Repeat("x", 510) + truncatedMark},
	}
	for _, tt := range tests {
		if got := auditField(tt.in, maxAuditField); got != tt.want {
			t.Errorf("auditField(%q…) = %q…, want %q…", tt.in[:min(20, len(tt.in))], got[:min(20, len(got))], tt.want[:min(20, len(tt.want))])
		}
	}
	if n := testing.AllocsPerRun(100, func() { auditField("/v1/messages", maxAuditField) }); n != 0 {
		t.Errorf("auditField of a clean field allocates %v times, want 0", n)
	}
}

// TestIntercept_ConnectionClosedAfterDaemonRefusal: after the daemon itself
// answers 421 or 403 on HTTP/1.1, the connection ends: a request pipelined
// behind the refused one (another Host, or another denied spelling) is
// never read, let alone relayed with the credential.
func TestIntercept_ConnectionClosedAfterDaemonRefusal(t *testing.T) {
	var hits atomic.Int32
	h := newAttackHarness(t, &hits)
	next := "GET /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n"
	for _, tc := range []struct {
		name, first string
		status      int
	}{
		{"421", "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n", 421},
		{"403", "POST /v1/keys HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 0\r\n\r\n", 403},
		{"405", "TRACE / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := h.rawH1(t)
			io.WriteString(c, tc.first+next)
			resp, _ := readResp(t, br, "GET")
			h.rec.next(t)
			if resp.StatusCode != tc.status || !resp.Close {
				t.Fatalf("status %d, Connection: close %v; want %d and close", resp.StatusCode, resp.Close, tc.status)
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
				t.Errorf("after a %d: read %q, %v; want the connection closed", tc.status, b, err)
			}
		})
	}
	if hits.Load() != 0 {
		t.Errorf("the pipelined request reached the upstream %d times", hits.Load())
	}
}

// TestIntercept_H2ConnectionGoesAwayAfterDaemonRefusal: on h2 a 421 ends
// the connection too (GOAWAY), so a client that coalesced another name onto
// it opens a new one.
func TestIntercept_H2ConnectionGoesAwayAfterDaemonRefusal(t *testing.T) {
	var hits atomic.Int32
	h := newAttackHarness(t, &hits)
	var dials atomic.Int32
	tr := h.countingH2Transport(&dials)
	get := func(host string) int {
		req, _ := http.NewRequest("GET", "https://"+apiHost+"/v1/messages", nil)
		req.Host = host
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		h.rec.next(t)
		return resp.StatusCode
	}
	if s := get("evil.example"); s != http.StatusMisdirectedRequest {
		t.Fatalf("status %d, want 421", s)
	}
	time.Sleep(100 * time.Millisecond) // let the client read the GOAWAY
	if s := get(apiHost); s != 200 {
		t.Fatalf("status %d after the 421, want 200", s)
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("%d connections for a 421 then a good request, want 2 (the first one goes away)", n)
	}
}

// TestAttack_GitPushOnlyToScopedRepositories: with a push scope, a
// container can clone and fetch anything but push (git-receive-pack) only
// to the listed repositories; a push elsewhere never reaches the upstream
// with the credential.
func TestAttack_GitPushOnlyToScopedRepositories(t *testing.T) {
	const host = "git.intercept.test"
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			var hits atomic.Int32
			h := newAttackHarness(t, &hits)
			for _, target := range []string{"/evil/exfil.git/info/refs?service=git-receive-pack", "/evil/exfil.git/git-receive-pack",
				"/acme/app.git/../../evil/exfil.git/git-receive-pack"} {
				resp, body := h.do(t, p.h2, "POST", host, target)
				ev := h.rec.next(t)
				if strings.Contains(body, realCredential) || hits.Load() != 0 || resp.StatusCode != http.StatusForbidden || ev.AuthInjected {
					t.Fatalf("push to %s: status %d body %q event %+v; want 403 and nothing upstream", target, resp.StatusCode, body, ev)
				}
			}
			for _, target := range []string{"/evil/exfil.git/info/refs?service=git-upload-pack", "/acme/app.git/git-receive-pack"} {
				if _, body := h.do(t, p.h2, "POST", host, target); !strings.Contains(body, realCredential) {
					t.Errorf("%s did not get the credential: %q", target, body)
				}
				h.rec.next(t)
			}
		})
	}
}
