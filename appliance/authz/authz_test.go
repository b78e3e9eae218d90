package authz

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func testPolicy(refused *[]Refusal) *Policy {
	return &Policy{
		Network:   "clauderon",
		Allow:     []string{"build-cache"},
		Protected: []string{"/var/lib/clauderon", "/etc/clauderon", "/var/run/docker.sock", "/run/docker.sock"},
		ExpectRun: func(tok string) bool { return tok == "good-token" },
		OwnMounts: func(tok string) []string {
			if tok == "good-token" {
				return []string{"/var/lib/clauderon/sessions/s/claude.json", "/var/lib/clauderon/uploads/s"}
			}
			return nil
		},
		PublicFiles: []string{"/var/lib/clauderon/proxy-ca.pem", "/var/lib/clauderon/ca-bundle.pem"},
		Audit:       func(r Refusal) { *refused = append(*refused, r) },
	}
}

// ask sends one AuthZReq through the real handler, as dockerd does.
func ask(t *testing.T, h http.Handler, method, uri, body string) Response {
	t.Helper()
	req, _ := json.Marshal(Request{RequestMethod: method, RequestURI: uri, RequestBody: []byte(body)})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, pathRequest, bytes.NewReader(req)))
	var res Response
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
		t.Fatalf("%s %s: %v %q", method, uri, err, rec.Body.String())
	}
	return res
}

func TestDecide(t *testing.T) {
	var refused []Refusal
	h := Handler(testPolicy(&refused))
	create := "/v1.41/containers/create?name=x"
	for _, tc := range []struct {
		name, method, uri, body string
		allow                   bool
		rule                    string
	}{
		{"plain run on clauderon", "POST", create, `{"Image":"img","HostConfig":{"NetworkMode":"clauderon"},"NetworkingConfig":{"EndpointsConfig":{"clauderon":{}}}}`, true, ""},
		{"none", "POST", create, `{"HostConfig":{"NetworkMode":"none"}}`, true, ""},
		{"allow-listed network", "POST", create, `{"HostConfig":{"NetworkMode":"build-cache"}}`, true, ""},
		{"network host", "POST", create, `{"HostConfig":{"NetworkMode":"host"}}`, false, "network-host"},
		{"container mode", "POST", create, `{"HostConfig":{"NetworkMode":"container:victim"}}`, false, "network-container"},
		{"default bridge", "POST", create, `{"HostConfig":{"NetworkMode":"default"}}`, false, "network"},
		{"no network at all", "POST", create, `{"Image":"img"}`, false, "network"},
		{"other network", "POST", create, `{"HostConfig":{"NetworkMode":"corp"}}`, false, "network"},
		{"second network endpoint", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon"},"NetworkingConfig":{"EndpointsConfig":{"corp":{}}}}`, false, "network"},
		{"privileged", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Privileged":true}}`, false, "privileged"},
		{"net admin", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","CapAdd":["NET_ADMIN"]}}`, false, "capability"},
		{"cap all", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","CapAdd":["all"]}}`, false, "capability"},
		{"harmless cap", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","CapAdd":["CHOWN"]}}`, true, ""},
		{"device", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Devices":[{"PathOnHost":"/dev/net/tun"}]}}`, false, "devices"},
		{"pid host", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","PidMode":"host"}}`, false, "pid-host"},
		{"docker socket bind", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}`, false, "mount"},
		{"state dir mount", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Mounts":[{"Type":"bind","Source":"/var/lib/clauderon/secrets","Target":"/s"}]}}`, false, "mount"},
		{"parent of a protected path", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Binds":["/var/lib:/x:ro"]}}`, false, "mount"},
		{"root", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Binds":["/:/host"]}}`, false, "mount"},
		{"a project dir", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Binds":["/home/alice/src:/workspace"]}}`, true, ""},
		{"named volume", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Binds":["cache:/cache"]}}`, true, ""},
		{"forged profile label", "POST", create, `{"Labels":{"clauderon.profile":"team-b"},"HostConfig":{"NetworkMode":"clauderon"}}`, false, "label"},
		{"forged run label", "POST", create, `{"Labels":{"clauderon.profile":"team-b","clauderon.run":"guess"},"HostConfig":{"NetworkMode":"clauderon"}}`, false, "label"},
		{"clauderond's own token", "POST", create, `{"Labels":{"clauderon.profile":"team-b","clauderon.run":"good-token"},"HostConfig":{"NetworkMode":"clauderon"}}`, true, ""},
		{"the token's own mounts", "POST", create, `{"Labels":{"clauderon.run":"good-token"},"HostConfig":{"NetworkMode":"clauderon","Mounts":[{"Type":"bind","Source":"/var/lib/clauderon/sessions/s/claude.json","Target":"/h/.claude.json"},{"Type":"bind","Source":"/var/lib/clauderon/uploads/s","Target":"/u"}]}}`, true, ""},
		{"a token with a mount it was not given", "POST", create, `{"Labels":{"clauderon.run":"good-token"},"HostConfig":{"NetworkMode":"clauderon","Binds":["/var/lib/clauderon/secrets:/s"]}}`, false, "mount"},
		{"another session's files", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Mounts":[{"Type":"bind","Source":"/var/lib/clauderon/sessions/s/claude.json","Target":"/x"}]}}`, false, "mount"},
		{"the CA read-only", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Binds":["/var/lib/clauderon/proxy-ca.pem:/ca.pem:ro"]}}`, true, ""},
		{"the CA writable", "POST", create, `{"HostConfig":{"NetworkMode":"clauderon","Binds":["/var/lib/clauderon/proxy-ca.pem:/ca.pem"]}}`, false, "mount"},
		{"unreadable body", "POST", create, `{"HostConfig":`, false, "unreadable"},
		{"no body", "POST", create, ``, false, "unreadable"},
		{"privileged exec", "POST", "/v1.41/containers/abc/exec", `{"Cmd":["sh"],"Privileged":true}`, false, "privileged-exec"},
		{"exec", "POST", "/v1.41/containers/abc/exec", `{"Cmd":["sh"]}`, true, ""},
		{"connect to clauderon", "POST", "/v1.41/networks/clauderon/connect", `{"Container":"x"}`, false, "connect"},
		{"connect elsewhere", "POST", "/v1.41/networks/corp/connect", `{"Container":"x"}`, false, "connect"},
		{"connect allow-listed", "POST", "/v1.41/networks/build-cache/connect", `{"Container":"x"}`, true, ""},
		{"service", "POST", "/v1.41/services/create", `{}`, false, "services"},
		{"list", "GET", "/v1.41/containers/json", ``, true, ""},
		{"start", "POST", "/v1.41/containers/abc/start", ``, true, ""},
	} {
		refused = nil
		res := ask(t, h, tc.method, tc.uri, tc.body)
		if res.Allow != tc.allow {
			t.Errorf("%s: allow=%v (%q), want %v", tc.name, res.Allow, res.Msg, tc.allow)
			continue
		}
		if !tc.allow {
			if len(refused) != 1 || refused[0].Rule != tc.rule || !strings.HasPrefix(res.Msg, "clauderon: ") {
				t.Errorf("%s: refusal %+v msg %q, want rule %s, audited once", tc.name, refused, res.Msg, tc.rule)
			}
		}
	}
}

func TestActivate(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(&Policy{}).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, pathActivate, nil))
	if !strings.Contains(rec.Body.String(), `"authz"`) {
		t.Errorf("activate = %q", rec.Body.String())
	}
}
