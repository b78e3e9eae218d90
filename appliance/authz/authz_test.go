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

// TestDecide_Escapes: requests that dockerd (20.10, the API it serves)
// would carry out and that put a container, a build step or a mount
// outside clauderon's enforcement, each refused.
func TestDecide_Escapes(t *testing.T) {
	var refused []Refusal
	pol := testPolicy(&refused)
	h := Handler(pol)
	create := "/v1.41/containers/create"
	onNet := func(extra string) string { return `{"HostConfig":{"NetworkMode":"clauderon"` + extra + `}}` }
	for _, tc := range []struct {
		name, uri, body, rule string
	}{
		// dockerd's router matches the percent-decoded path; the plugin
		// is sent the raw RequestURI.
		{"encoded slash in create", "/v1.41/containers%2Fcreate", `{"HostConfig":{"NetworkMode":"host"}}`, "network-host"},
		{"encoded letter in create", "/v1.41/containers/creat%65", `{"HostConfig":{"Privileged":true,"NetworkMode":"clauderon"}}`, "privileged"},
		{"encoded exec", "/v1.41/containers/abc/ex%65c", `{"Cmd":["sh"],"Privileged":true}`, "privileged-exec"},
		{"encoded plugin pull", "/v1.41/plugins/pul%6c?remote=evil", `[]`, "plugins"},
		// API < 1.24 applies a HostConfig sent with start.
		{"hostconfig at start", "/v1.23/containers/abc/start", `{"NetworkMode":"host","Privileged":true}`, "start-hostconfig"},
		{"hostconfig at start, chunked (no body reaches the plugin)", "/v1.19/containers/abc/start", ``, "start-hostconfig"},
		{"device cgroup rule (mknod the host disk)", create, onNet(`,"DeviceCgroupRules":["b *:* rwm"]`), "devices"},
		{"cap DAC_READ_SEARCH (open_by_handle_at)", create, onNet(`,"CapAdd":["CAP_DAC_READ_SEARCH"]`), "capability"},
		{"cap SYS_RAWIO", create, onNet(`,"CapAdd":["SYS_RAWIO"]`), "capability"},
		{"full capability set", create, `{"HostConfig":{"NetworkMode":"clauderon","Capabilities":["CAP_SYS_ADMIN","CAP_NET_ADMIN"]}}`, "capability"},
		{"pid of another container", create, onNet(`,"PidMode":"container:clauderon-victim"`), "pid-container"},
		{"volumes from another's session", create, onNet(`,"VolumesFrom":["clauderon-victim"]`), "volumes-from"},
		{"volume mount binding the state dir", create, onNet(`,"Mounts":[{"Type":"volume","Source":"sv","Target":"/s","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/var/lib/clauderon"}}}}]`), "volume-options"},
		{"volume create binding the state dir", "/v1.41/volumes/create", `{"Name":"sv","Driver":"local","DriverOpts":{"type":"none","o":"bind","device":"/var/lib/clauderon"}}`, "volume-options"},
		{"volume create with an nfs mount from the host", "/v1.41/volumes/create", `{"Name":"x","DriverOpts":{"type":"nfs","o":"addr=203.0.113.9","device":":/x"}}`, "volume-options"},
		{"build on the host network", "/v1.41/build?networkmode=host&t=x", ``, "build"},
		{"build on the default bridge", "/v1.41/build?t=x", ``, "build"},
		{"buildkit session", "/v1.41/session", ``, "build"},
		{"buildkit grpc", "/grpc", ``, "build"},
		{"plugin install", "/v1.41/plugins/pull?remote=evil/plugin", `[]`, "plugins"},
		{"plugin enable", "/v1.41/plugins/evil/enable", ``, "plugins"},
		{"exec whose body did not reach the plugin", "/v1.41/containers/abc/exec", ``, "unreadable"},
	} {
		refused = nil
		res := ask(t, h, "POST", tc.uri, tc.body)
		if res.Allow {
			t.Errorf("%s: allowed, want refused (rule %s)", tc.name, tc.rule)
			continue
		}
		if len(refused) != 1 || refused[0].Rule != tc.rule {
			t.Errorf("%s: refusal %+v msg %q, want rule %s", tc.name, refused, res.Msg, tc.rule)
		}
	}

	// dockerd reads host configuration at the top level of the body when
	// "HostConfig" is absent or null: where the default bridge is allowed,
	// that was a privileged container with the host's root mounted.
	pol.Allow = append(pol.Allow, "bridge")
	for _, body := range []string{
		`{"Image":"img","Privileged":true}`,
		`{"Image":"img","HostConfig":null,"Binds":["/:/host"]}`,
	} {
		refused = nil
		if res := ask(t, h, "POST", create, body); res.Allow {
			t.Errorf("top-level host configuration %s: allowed", body)
		}
	}

	// What stays allowed.
	for _, tc := range []struct{ uri, body string }{
		{"/v1.41/containers/abc/start", ``},
		{"/v1.24/containers/abc/start", ``},
		{"/containers/abc/start", ``},
		{"/v1.41/volumes/create", `{"Name":"cache"}`},
		{"/v1.41/build?networkmode=clauderon&t=x", ``},
		{"/v1.41/build?networkmode=none", ``},
		{create, onNet(`,"Mounts":[{"Type":"volume","Source":"cache","Target":"/c"}]`)},
		{"/v1.41/plugins/x/disable", ``},
	} {
		if res := ask(t, h, "POST", tc.uri, tc.body); !res.Allow {
			t.Errorf("%s %s: refused (%s), want allowed", tc.uri, tc.body, res.Msg)
		}
	}
}

// TestDecide_RunTokenAdmitsOneContainer: a run token is in the container's
// labels, which anyone with Docker access sees (docker events shows them
// on create). It used to stay valid until the daemon saw the container
// start, so another tenant could create a container of their own with it:
// the reserved labels and the token's state-dir mounts (another user's
// session files) allowed, and, started first, the owner's provenance.
// Only one create per token is admitted; a create dockerd did not carry
// out (missing image, then pull and retry) gives it back.
func TestDecide_RunTokenAdmitsOneContainer(t *testing.T) {
	var refused []Refusal
	pol := testPolicy(&refused)
	claimed := map[string]bool{}
	pol.ClaimRun = func(tok string) bool {
		if tok != "good-token" || claimed[tok] {
			return false
		}
		claimed[tok] = true
		return true
	}
	pol.ReleaseRun = func(tok string) { delete(claimed, tok) }
	h := Handler(pol)
	body := `{"Labels":{"clauderon.profile":"team-a","clauderon.run":"good-token"},"HostConfig":{"NetworkMode":"clauderon","Mounts":[{"Type":"bind","Source":"/var/lib/clauderon/uploads/s","Target":"/u"}]}}`
	uri := "/v1.41/containers/create"
	respond := func(status int) {
		req, _ := json.Marshal(map[string]any{"RequestMethod": "POST", "RequestUri": uri, "RequestBody": []byte(body), "ResponseStatusCode": status})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, pathResponse, bytes.NewReader(req)))
	}
	if res := ask(t, h, "POST", uri, body); !res.Allow {
		t.Fatalf("the token's first create: %s", res.Msg)
	}
	respond(404) // no such image: the client pulls and asks again
	if res := ask(t, h, "POST", uri, body); !res.Allow {
		t.Fatalf("the retry after a failed create: %s", res.Msg)
	}
	respond(201)
	if res := ask(t, h, "POST", uri, body); res.Allow {
		t.Errorf("a second container with a token already used was admitted (with its mounts and labels)")
	}
}
