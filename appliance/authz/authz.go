// Package authz is clauderond's Docker authorization plugin: dockerd asks
// it about every API request (dockerd --authorization-plugin=clauderon, or
// "authorization-plugins": ["clauderon"] in daemon.json) and it refuses the
// ones that would let a container escape enforcement on a shared host:
//
//   - a container on a network other than clauderon's (and Policy.Allow),
//     --network host, or --network container:X (X is someone's container,
//     whose address and credentials it would share);
//   - --privileged, CAP_NET_ADMIN / CAP_SYS_ADMIN / ALL, devices, the
//     host's PID namespace;
//   - bind mounts of the Docker socket, the state dir, /etc/clauderon or
//     /run/clauderon, or of any directory above them;
//   - the labels only clauderond sets (clauderon.profile, clauderon.run,
//     clauderon.session), unless they carry a run token clauderond handed
//     out (Policy.ExpectRun);
//   - privileged execs, connecting a container to another network, and
//     swarm services (not supported under the plugin).
//
// Every refusal names the rule and the fix, and is reported to
// Policy.Audit. The plugin decides from the request alone (no Docker call
// on the request path except resolving container:X) and fails closed:
// a body it cannot read is refused. When clauderond is down, dockerd
// refuses every request (that is dockerd's behaviour with an unreachable
// plugin); the README says how to take the plugin out.
//
// It speaks the plugin protocol (Docker's "authz" plugin API v1: the
// request and response types below mirror the JSON of the docker module's
// pkg/authorization, which is not imported for three small structs, since
// it would bring its logging stack into the daemon) and owns nothing else:
// the appliance builds the Policy and serves the Handler on a socket in
// /run/docker/plugins.
package authz

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
)

// Policy is what the plugin enforces.
type Policy struct {
	// Network is clauderon's Docker network; Allow lists other networks
	// containers may use ("none" is always allowed: no way out).
	Network string
	Allow   []string
	// Protected are host paths never bind-mounted, nor any directory
	// above them (the state dir, /etc/clauderon, the Docker socket …).
	Protected []string
	// ExpectRun reports whether a clauderon.run label value is a token
	// clauderond handed out (a session it creates, a `clauderon run`).
	ExpectRun func(token string) bool
	// ClaimRun, when set, admits one container create per token: the
	// token is in the container's labels, which anyone with Docker access
	// sees (docker events), so a second create with it is refused.
	// ReleaseRun gives the token back when dockerd did not create the
	// container (a missing image the client then pulls).
	ClaimRun   func(token string) bool
	ReleaseRun func(token string)
	// OwnMounts returns the protected host paths clauderond itself mounts
	// for the container of a token (its claude.json, uploads, the CA): a
	// request carrying the token may mount exactly those, nothing else
	// protected.
	OwnMounts func(token string) []string
	// PublicFiles may be mounted read-only by anyone (the CA certificate
	// and trust bundle: public).
	PublicFiles []string
	// Audit receives every refusal; nil discards.
	Audit func(Refusal)
	// Logger is optional.
	Logger *slog.Logger

	asked atomic.Uint64 // requests dockerd sent
}

// Asked is how many requests dockerd has sent the plugin: 0 after any
// Docker call means dockerd is not using it.
func (p *Policy) Asked() uint64 { return p.asked.Load() }

// Refusal is one refused request.
type Refusal struct {
	Method, URI string
	Rule        string // short name, e.g. "network-host"
	Msg         string // the message dockerd shows the client
}

// Request is what dockerd asks (AuthZPlugin.AuthZReq).
type Request struct {
	User           string            `json:"User,omitempty"`
	RequestMethod  string            `json:"RequestMethod,omitempty"`
	RequestURI     string            `json:"RequestUri,omitempty"`
	RequestBody    []byte            `json:"RequestBody,omitempty"`
	RequestHeaders map[string]string `json:"RequestHeaders,omitempty"`
}

// Response is the plugin's answer.
type Response struct {
	Allow bool   `json:"Allow"`
	Msg   string `json:"Msg,omitempty"`
	Err   string `json:"Err,omitempty"`
}

// Protocol names.
const (
	pathActivate = "/Plugin.Activate"
	pathRequest  = "/AuthZPlugin.AuthZReq"
	pathResponse = "/AuthZPlugin.AuthZRes"
	implements   = "authz"
)

// Labels only clauderond sets.
var reservedLabels = []string{"clauderon.profile", "clauderon.run", "clauderon.session"}

// Handler serves the plugin protocol for p.
func Handler(p *Policy) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathActivate, func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string][]string{"Implements": {implements}})
	})
	mux.HandleFunc("POST "+pathRequest, func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil {
			reply(w, Response{Allow: false, Msg: "clauderon authz: unreadable request: " + err.Error()})
			return
		}
		reply(w, p.decide(req))
	})
	mux.HandleFunc("POST "+pathResponse, func(w http.ResponseWriter, r *http.Request) {
		var res struct {
			Request
			ResponseStatusCode int `json:"ResponseStatusCode,omitempty"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 8<<20)).Decode(&res); err == nil {
			p.responded(res.Request, res.ResponseStatusCode)
		}
		reply(w, Response{Allow: true})
	})
	return mux
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1+json")
	_ = json.NewEncoder(w).Encode(v)
}

var apiVersion = regexp.MustCompile(`^/v([0-9.]+)`)

// route is a request's method, path (percent-decoded and cleaned, as
// dockerd's router matches it, without the API version), the API version
// it names ("" for none) and its query. ok is false for a URI dockerd's
// router could read differently.
func route(req Request) (method, p, version string, query url.Values, ok bool) {
	u, err := url.ParseRequestURI(req.RequestURI)
	if err != nil {
		return req.RequestMethod, "", "", nil, false
	}
	p = u.Path
	if m := apiVersion.FindStringSubmatch(p); m != nil {
		version, p = m[1], p[len(m[0]):]
	}
	if p == "" {
		p = "/"
	}
	query, err = url.ParseQuery(u.RawQuery)
	return req.RequestMethod, path.Clean(p), version, query, err == nil
}

// olderThan reports whether API version v (e.g. "1.23") is older than
// major.minor; "" (dockerd's current version) is not.
func olderThan(v string, major, minor int) bool {
	if v == "" {
		return false
	}
	a, b, _ := strings.Cut(v, ".")
	ma, err1 := strconv.Atoi(a)
	mi, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil {
		return true // unreadable: treat as old
	}
	return ma < major || ma == major && mi < minor
}

// decide answers one request.
func (p *Policy) decide(req Request) Response {
	p.asked.Add(1)
	method, path, version, query, ok := route(req)
	var rule, msg string
	switch {
	case !ok:
		rule, msg = "unreadable", fmt.Sprintf("cannot read the request URI %q; refusing", req.RequestURI)
	case method != http.MethodPost:
	case path == "/containers/create":
		rule, msg = p.checkCreate(req.RequestBody)
	case strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/start") && olderThan(version, 1, 24):
		// API < 1.24 takes a HostConfig in the start request's body
		// (chunked bodies never reach the plugin) and applies it: every
		// check made at create would be undone.
		rule, msg = "start-hostconfig", "starting a container with API version "+version+" (which takes a host configuration at start) is not allowed on this host; use a current Docker client"
	case strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/exec"):
		rule, msg = checkExec(req.RequestBody)
	case strings.HasPrefix(path, "/networks/") && strings.HasSuffix(path, "/connect"):
		rule, msg = p.checkConnect(strings.TrimSuffix(strings.TrimPrefix(path, "/networks/"), "/connect"))
	case path == "/services/create" || strings.HasPrefix(path, "/services/") && strings.HasSuffix(path, "/update"):
		rule, msg = "services", "swarm services are not allowed on this host (their tasks would not be checked); run containers on the "+p.Network+" network"
	case path == "/volumes/create":
		rule, msg = checkVolumeCreate(req.RequestBody)
	case path == "/build":
		rule, msg = p.checkBuild(query)
	case path == "/session" || path == "/grpc":
		rule, msg = "build", "BuildKit sessions are not allowed on this host (their build steps would run outside the "+p.Network+" network); use DOCKER_BUILDKIT=0 docker build --network "+p.Network
	case path == "/plugins/pull" || path == "/plugins/create" ||
		strings.HasPrefix(path, "/plugins/") && (strings.HasSuffix(path, "/upgrade") || strings.HasSuffix(path, "/enable") || strings.HasSuffix(path, "/set")):
		rule, msg = "plugins", "installing or enabling Docker plugins is not allowed on this host (a plugin runs with the host's privileges)"
	}
	if rule == "" {
		return Response{Allow: true}
	}
	msg = "clauderon: " + msg
	if p.Audit != nil {
		p.Audit(Refusal{Method: method, URI: path, Rule: rule, Msg: msg})
	}
	return Response{Allow: false, Msg: msg}
}

// responded releases the run token of a container create dockerd did not
// carry out.
func (p *Policy) responded(req Request, status int) {
	method, path, _, _, ok := route(req)
	if !ok || method != http.MethodPost || path != "/containers/create" || status < 300 || p.ReleaseRun == nil {
		return
	}
	var b createBody
	if json.Unmarshal(req.RequestBody, &b) == nil && b.Labels["clauderon.run"] != "" {
		p.ReleaseRun(b.Labels["clauderon.run"])
	}
}
