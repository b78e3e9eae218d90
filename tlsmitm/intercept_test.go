package tlsmitm

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestIntercept_InjectsRealCredentialAndStripsPlaceholder(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := map[bool]string{false: "http1.1", true: "h2"}[h2]
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			req, _ := http.NewRequest("POST", "https://"+apiHost+"/v1/messages?beta=true", strings.NewReader(`{"x":1}`))
			req.Header.Set("Authorization", "Bearer "+placeholder)
			req.Header.Set("X-Api-Key", placeholder)
			resp, err := h.client(h2).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d body %s", resp.StatusCode, body)
			}
			if got := resp.Header.Get("X-Auth-Is-Real"); got != "true" {
				t.Errorf("upstream got the real credential: %s, want true", got)
			}
			if got := resp.Header.Get("X-Saw-Placeholder"); got != "false" {
				t.Errorf("upstream saw the placeholder: %s, want false", got)
			}
			wantProto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
			if resp.Proto != wantProto {
				t.Errorf("client proto %s, want %s", resp.Proto, wantProto)
			}
			ev := h.rec.next(t)
			if ev.Decision != Intercept || ev.Status != 200 || !ev.AuthInjected || ev.Rule != "anthropic" ||
				ev.Path != "/v1/messages" || ev.Method != "POST" || ev.Host != apiHost || ev.SNI != apiHost || ev.BytesIn != 7 {
				t.Errorf("audit event = %+v", ev)
			}
			if !ev.Client.Known || ev.Client.Name != "agent-1" || !ev.SrcIP.IsValid() || !ev.OrigDst.IsValid() {
				t.Errorf("audit event identity = %+v", ev)
			}
		})
	}
}

// TestIntercept_ClientLegUsesX25519 holds the terminator to plain X25519 on
// the host-local client leg even when the client offers the ML-KEM hybrid
// (as Go and recent Node do): crypto/tls would otherwise always pick the
// hybrid, at several times the key exchange cost.
func TestIntercept_ClientLegUsesX25519(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c, err := tls.Dial("tcp", h.addr, &tls.Config{
		ServerName:       apiHost,
		RootCAs:          h.pool,
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().CurveID; got != tls.X25519 {
		t.Errorf("client leg key exchange = %v, want %v", got, tls.X25519)
	}
}
