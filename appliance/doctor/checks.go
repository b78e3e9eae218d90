package doctor

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/clauderon/clauderond/appliance/api"
)

const fixStart = "start the daemon: sudo systemctl start clauderond (or run sudo clauderond in a terminal) and read its log: journalctl -u clauderond -e"

func daemonStep(st api.Status, err error) api.DoctorStep {
	s := api.DoctorStep{Name: "daemon ready"}
	switch {
	case err != nil:
		s.Detail = "cannot read the daemon's status: " + err.Error()
		s.Fix = fixStart
	case !st.Ready:
		s.Detail = "daemon is up but not ready"
		if len(st.Problems) > 0 {
			s.Detail += ": " + strings.Join(st.Problems, "; ")
		}
		s.Fix = "wait a few seconds and retry; if it stays not ready, read the daemon log: journalctl -u clauderond -e"
	default:
		s.OK = true
		s.Detail = fmt.Sprintf("version %s, egress mode %s, network %s (%s)", st.Version, st.Mode, st.Network.Name, st.Network.Subnet)
	}
	return s
}

func rulesStep(st api.Status) api.DoctorStep {
	s := api.DoctorStep{Name: "firewall rules intact"}
	if st.Enforcement == api.EnforcementIntact {
		s.OK = true
		s.Detail = "nftables table matches the desired ruleset"
		return s
	}
	s.Detail = fmt.Sprintf("enforcement is %q", st.Enforcement)
	if len(st.Drift) > 0 {
		s.Detail += "; drift: " + strings.Join(st.Drift, ", ")
	}
	s.Fix = "re-apply the rules: sudo systemctl reload clauderond (SIGHUP); if the drift comes back, something else rewrites nftables (a firewall service restart, nft flush ruleset)"
	return s
}

func listenersStep(st api.Status) api.DoctorStep {
	s := api.DoctorStep{Name: "listeners up", OK: true}
	var bad, good []string
	for _, l := range st.Listeners {
		if l.OK {
			good = append(good, l.Name+" "+l.Address)
		} else {
			bad = append(bad, l.Name+" "+l.Address)
		}
	}
	switch {
	case len(st.Listeners) == 0:
		s.OK, s.Detail = false, "status lists no listeners"
		s.Fix = "restart the daemon: sudo systemctl restart clauderond"
	case len(bad) > 0:
		s.OK, s.Detail = false, "down: "+strings.Join(bad, ", ")
		s.Fix = "check the ports in listen.* are free on the bridge gateway (ss -ltnup) and restart: sudo systemctl restart clauderond"
	default:
		s.Detail = strings.Join(good, ", ")
	}
	return s
}

// credentialSteps check that credentials are present and look like what
// their name promises, from the kinds status reports (never the values).
func credentialSteps(st api.Status) []api.DoctorStep {
	s := api.DoctorStep{Name: "credentials present"}
	var present []string
	var anthropic *api.Credential
	for i, c := range st.Credentials {
		if !c.Present {
			continue
		}
		present = append(present, fmt.Sprintf("%s/%s (%s from %s, %s)", c.Profile, c.Name, c.Kind, c.Source, c.Fingerprint))
		if c.Name == "anthropic" && (c.Profile == "default" || c.Profile == "") {
			anthropic = &st.Credentials[i]
		}
	}
	switch {
	case anthropic == nil:
		s.Detail = "no anthropic credential in the default profile"
		if len(present) > 0 {
			s.Detail += "; present: " + strings.Join(present, ", ")
		}
		s.Fix = "put CLAUDE_CODE_OAUTH_TOKEN=… (`claude setup-token` output) in /etc/clauderon/credentials.env (mode 0600, read by the daemon itself: it takes effect within a second, or at once with sudo systemctl reload clauderond) or in <state_dir>/secrets/anthropic (mode 0600); a daemon started by hand with sudo needs sudo --preserve-env=CLAUDE_CODE_OAUTH_TOKEN"
	default:
		s.OK = true
		s.Detail = strings.Join(present, ", ")
	}
	steps := []api.DoctorStep{s}
	return append(steps, formatStep(st.Credentials))
}

// expectedKinds lists, per credential name, the kinds a sane value has.
var expectedKinds = map[string][]string{
	"anthropic": {"oauth", "api-key"},
	"openai":    {"api-key"},
	"github":    {"github-token", "token"},
	"npm":       {"npm-token", "token"},
}

var kindExamples = map[string]string{
	"anthropic": "sk-ant-oat01-… (OAuth, from `claude setup-token`) or sk-ant-api03-… (API key)",
	"openai":    "sk-…",
	"github":    "ghp_…, github_pat_… or gho_…",
	"npm":       "npm_…",
}

func formatStep(creds []api.Credential) api.DoctorStep {
	s := api.DoctorStep{Name: "credential formats", OK: true, Detail: "every present credential has the expected format"}
	var bad []string
	for _, c := range creds {
		want, known := expectedKinds[c.Name]
		if !c.Present || !known || slices.Contains(want, c.Kind) {
			continue
		}
		bad = append(bad, fmt.Sprintf("%s/%s from %s is a %q, expected %s", c.Profile, c.Name, c.Source, c.Kind, kindExamples[c.Name]))
	}
	if len(bad) > 0 {
		s.OK = false
		s.Detail = strings.Join(bad, "; ")
		s.Fix = "replace the value at the named source (check for a stray quote, newline or a token pasted into the wrong variable), then sudo systemctl reload clauderond"
	}
	return s
}

// caSteps check the CA certificate parses, is a CA and is in its validity
// window, and that its key is private to root.
func caSteps(d Deps) []api.DoctorStep {
	s := api.DoctorStep{Name: "CA certificate valid"}
	cert, err := readCert(d.CAPath)
	now := d.Now()
	switch {
	case err != nil:
		s.Detail = err.Error()
		s.Fix = "the daemon creates the CA at start: restart it (sudo systemctl restart clauderond); if the file is corrupt, move " + d.CAPath + " and its key aside first (containers must then be recreated to trust the new CA)"
	case !cert.IsCA:
		s.Detail = d.CAPath + " is not a CA certificate"
		s.Fix = "move " + d.CAPath + " and its key aside and restart the daemon to create a new CA"
	case now.Before(cert.NotBefore) || now.After(cert.NotAfter):
		s.Detail = fmt.Sprintf("%s is valid %s to %s, not now (%s)", d.CAPath, cert.NotBefore.Format("2006-01-02"), cert.NotAfter.Format("2006-01-02"), now.Format("2006-01-02"))
		s.Fix = "check the host clock; if the CA expired, move it and its key aside, restart the daemon and recreate sessions"
	default:
		sum := sha256.Sum256(cert.Raw)
		s.OK = true
		s.Detail = fmt.Sprintf("%s: %q, sha256 %s, expires %s", d.CAPath, cert.Subject.CommonName, hex.EncodeToString(sum[:8]), cert.NotAfter.Format("2006-01-02"))
	}
	return []api.DoctorStep{s, caKeyStep(d)}
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return cert, nil
}

func caKeyStep(d Deps) api.DoctorStep {
	s := api.DoctorStep{Name: "CA key private"}
	key := d.CAKeyPath
	if key == "" {
		key = filepath.Join(filepath.Dir(d.CAPath), "proxy-ca-key.pem")
	}
	fi, err := os.Stat(key)
	switch {
	case err != nil:
		s.Detail = "cannot stat the CA key: " + err.Error()
		s.Fix = "run doctor through the daemon (clauderon doctor) so it checks as root; if the key is gone, restart the daemon to create a new CA and recreate sessions"
	case fi.Mode().Perm()&0o077 != 0:
		s.Detail = fmt.Sprintf("%s has mode %v; anyone who reads it can impersonate every intercepted host to your containers", key, fi.Mode().Perm())
		s.Fix = "sudo chmod 600 " + key
	default:
		s.OK = true
		s.Detail = fmt.Sprintf("%s mode %v", key, fi.Mode().Perm())
	}
	return s
}

// claudeJSONStep checks claude.json exists, is JSON, and the session user can
// write it (claude rewrites it; a read-only one breaks every session).
func claudeJSONStep(d Deps) api.DoctorStep {
	s := api.DoctorStep{Name: "claude.json writable"}
	fix := fmt.Sprintf(`create it for the session user: echo '{"hasCompletedOnboarding": true}' | sudo tee %s && sudo chown %s %s && sudo chmod 600 %s`, d.ClaudeJSON, d.SessionUser, d.ClaudeJSON, d.ClaudeJSON)
	data, err := os.ReadFile(d.ClaudeJSON)
	if err != nil {
		s.Detail = err.Error() + " (it is created by the first clauderon create or clauderon run)"
		s.Fix = fix
		return s
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		s.Detail = fmt.Sprintf("%s is not a JSON object: %v", d.ClaudeJSON, err)
		s.Fix = "move it aside (claude then starts onboarding from scratch) and " + fix
		return s
	}
	fi, err := os.Stat(d.ClaudeJSON)
	if err != nil {
		s.Detail, s.Fix = err.Error(), fix
		return s
	}
	if ok, why := writableBy(fi, d.SessionUser); !ok {
		s.Detail = why
		s.Fix = fmt.Sprintf("sudo chown %s %s", d.SessionUser, d.ClaudeJSON)
		return s
	}
	s.OK = true
	s.Detail = fmt.Sprintf("%s (%d bytes)", d.ClaudeJSON, len(data))
	return s
}

// writableBy reports whether a numeric uid[:gid] user may write the file.
// Named users cannot be resolved inside an image from here: assume yes.
func writableBy(fi os.FileInfo, user string) (bool, string) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	us, gs, hasG := strings.Cut(user, ":")
	uid, err := strconv.Atoi(us)
	if !ok || err != nil {
		return true, ""
	}
	gid := uid
	if hasG {
		if gid, err = strconv.Atoi(gs); err != nil {
			return true, ""
		}
	}
	perm := fi.Mode().Perm()
	switch {
	case int(st.Uid) == uid && perm&0o200 != 0, int(st.Gid) == gid && perm&0o020 != 0, perm&0o002 != 0:
		return true, ""
	}
	return false, fmt.Sprintf("owned by %d:%d mode %v: the session user %s cannot write it, and claude rewrites it", st.Uid, st.Gid, perm, user)
}
