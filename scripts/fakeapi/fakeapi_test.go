package fakeapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testToken = "sk-ant-oat01-UNIT-REAL-abc123"

func serve(t *testing.T, h http.Handler, names ...string) (*Server, *http.Client, *CA) {
	t.Helper()
	ca, err := NewCA("unit CA")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.ServerTLS(false, names...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Serve(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: names[0]}}}
	return s, c, ca
}

func post(t *testing.T, c *http.Client, url, authz, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestAnthropic_RefusesAnythingButTheRealToken(t *testing.T) {
	log := &Log{}
	s, c, _ := serve(t, &Anthropic{OAuthToken: testToken, Log: log}, "api.anthropic.com")
	for _, tc := range []struct{ name, authz, wantAuth string }{
		{"none", "", "none"},
		{"placeholder", "Bearer sk-ant-oat01-clauderon-proxy-placeholder", "placeholder"},
		{"wrong", "Bearer sk-ant-oat01-other", "wrong"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, c, "https://"+s.Addr+"/v1/messages", tc.authz, `{"model":"m","stream":false}`)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status = %d, want 401", resp.StatusCode)
			}
			all := log.All()
			if got := all[len(all)-1].Auth; got != tc.wantAuth {
				t.Errorf("auth = %q, want %q", got, tc.wantAuth)
			}
		})
	}
}

func TestAnthropic_StreamsEventsInOrder(t *testing.T) {
	s, c, _ := serve(t, &Anthropic{OAuthToken: testToken, Log: &Log{}}, "api.anthropic.com")
	resp := post(t, c, "https://"+s.Addr+"/v1/messages?beta=true", "Bearer "+testToken, `{"model":"m","stream":true}`)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []string
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if ev, ok := strings.CutPrefix(line, "event: "); ok {
			events = append(events, ev)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var d struct {
				Delta struct{ Text string } `json:"delta"`
			}
			if err := json.Unmarshal([]byte(data), &d); err != nil {
				t.Fatalf("bad data line %q: %v", data, err)
			}
			text.WriteString(d.Delta.Text)
		}
	}
	if events[0] != "message_start" || events[len(events)-1] != "message_stop" {
		t.Errorf("events = %v", events)
	}
	if text.String() != Reply {
		t.Errorf("streamed text = %q, want %q", text.String(), Reply)
	}
}

func TestAnthropic_UnknownPathsAreLogged(t *testing.T) {
	log := &Log{}
	s, c, _ := serve(t, &Anthropic{OAuthToken: testToken, Log: log}, "api.anthropic.com")
	resp := post(t, c, "https://"+s.Addr+"/api/event_logging/batch", "", `{}`)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "{}" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if r := log.All()[0]; !r.Unknown || r.Path != "/api/event_logging/batch" {
		t.Errorf("log = %+v", r)
	}
}

func TestEcho_ReplacesSecretsByTheirName(t *testing.T) {
	s, c, _ := serve(t, &Echo{Name: "echo", Secrets: map[string]string{"openai": "sk-REAL-1"}, Log: &Log{}}, "api.openai.com")
	resp := post(t, c, "https://"+s.Addr+"/v1/x", "Bearer sk-REAL-1", "")
	body, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(body), "sk-REAL-1") || !strings.Contains(string(body), "Bearer <real:openai>") {
		t.Errorf("echo body = %s", body)
	}
}

func TestGit_CloneNeedsTheRealToken(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := CreateRepo(ctx, root, "acme", "private", "marker-42\n"); err != nil {
		t.Fatal(err)
	}
	log := &Log{}
	s, _, ca := serve(t, &Git{Root: root, Token: "ghp_REAL", Log: log}, "127.0.0.1")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := ca.WriteFile(caFile); err != nil {
		t.Fatal(err)
	}
	clone := func(url string) error {
		dst := filepath.Join(t.TempDir(), "clone")
		cmd := exec.CommandContext(ctx, "git", "clone", "-q", url, dst)
		cmd.Env = append(os.Environ(), "GIT_SSL_CAINFO="+caFile, "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("git clone %s: %s", strings.Split(url, "@")[len(strings.Split(url, "@"))-1], out)
			return err
		}
		data, err := os.ReadFile(filepath.Join(dst, "README.md"))
		if err == nil && string(data) != "marker-42\n" {
			t.Errorf("README = %q", data)
		}
		return err
	}
	if err := clone("https://" + s.Addr + "/acme/private.git"); err == nil {
		t.Error("clone without credentials succeeded")
	}
	if err := clone("https://x-access-token:ghp_REAL@" + s.Addr + "/acme/private.git"); err != nil {
		t.Errorf("clone with the real token failed: %v", err)
	}
}
