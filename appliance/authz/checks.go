package authz

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
)

// createBody is the part of POST /containers/create the plugin reads.
type createBody struct {
	Labels           map[string]string
	HostConfig       *container.HostConfig
	NetworkingConfig *network.NetworkingConfig
}

func (p *Policy) checkCreate(body []byte) (rule, msg string) {
	var b createBody
	if len(body) == 0 {
		return "unreadable", "the container's configuration was not sent to the authorization plugin; refusing"
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return "unreadable", "cannot read the container's configuration (" + err.Error() + "); refusing"
	}
	if r, m := p.checkLabels(b.Labels); r != "" {
		return r, m
	}
	// dockerd also reads host configuration fields at the top level of
	// the body (an old API form), and uses them when "HostConfig" is
	// absent or null: check those too.
	var top container.HostConfig
	_ = json.Unmarshal(body, &top) // a syntax error failed above; type errors leave the rest filled
	hc := b.HostConfig
	if hc == nil {
		hc = &top
	}
	if r, m := p.checkNetworkMode(hc); r != "" {
		return r, m
	}
	own := p.ownMounts(b.Labels)
	for _, h := range []*container.HostConfig{hc, &top} {
		if r, m := checkPrivileges(h); r != "" {
			return r, m
		}
		if r, m := p.checkMounts(h, own); r != "" {
			return r, m
		}
	}
	if r, m := checkRawCapabilities(body); r != "" {
		return r, m
	}
	if b.NetworkingConfig != nil {
		for name := range b.NetworkingConfig.EndpointsConfig {
			if !p.allowed(name) {
				return "network", fmt.Sprintf("network %q is not allowed on this host; use --network %s", name, p.Network)
			}
		}
	}
	if tok := b.Labels["clauderon.run"]; tok != "" && p.ClaimRun != nil && p.ExpectRun != nil && p.ExpectRun(tok) && !p.ClaimRun(tok) {
		return "label", "this clauderon.run token was already used by another container; each clauderon run or session gets its own"
	}
	return "", ""
}

func (p *Policy) checkLabels(labels map[string]string) (rule, msg string) {
	for _, l := range reservedLabels {
		if _, ok := labels[l]; !ok {
			continue
		}
		if tok := labels["clauderon.run"]; tok != "" && p.ExpectRun != nil && p.ExpectRun(tok) {
			return "", ""
		}
		return "label", fmt.Sprintf("the label %s is set by clauderond only; use clauderon run or clauderon create (with --profile) instead", l)
	}
	return "", ""
}

func (p *Policy) allowed(netName string) bool {
	return netName == p.Network || netName == "none" || slices.Contains(p.Allow, netName)
}

func (p *Policy) checkNetworkMode(hc *container.HostConfig) (rule, msg string) {
	m := hc.NetworkMode
	switch {
	case m.IsHost():
		return "network-host", "--network host would bypass clauderon entirely; use --network " + p.Network
	case m.IsContainer():
		return "network-container", fmt.Sprintf("--network %s would share another container's address (and its credentials); use --network %s", m, p.Network)
	case m == "" || m.IsDefault():
		if !p.allowed("bridge") && !p.allowed("default") {
			return "network", "containers on this host run on the " + p.Network + " network; add --network " + p.Network
		}
	case !p.allowed(string(m)):
		return "network", fmt.Sprintf("network %q is not allowed on this host; use --network %s", string(m), p.Network)
	}
	return "", ""
}

func checkPrivileges(hc *container.HostConfig) (rule, msg string) {
	switch {
	case hc.Privileged:
		return "privileged", "--privileged is not allowed on this host"
	case len(hc.Devices) > 0:
		return "devices", "--device is not allowed on this host"
	case len(hc.DeviceCgroupRules) > 0:
		// With the default CAP_MKNOD, a rule such as "b *:* rwm" lets the
		// container create and read the host's disks.
		return "devices", "--device-cgroup-rule is not allowed on this host"
	case hc.PidMode.IsHost():
		return "pid-host", "--pid host is not allowed on this host"
	case hc.PidMode.IsContainer():
		return "pid-container", fmt.Sprintf("--pid %s would share another container's processes (and, through /proc, its files)", hc.PidMode)
	case len(hc.VolumesFrom) > 0:
		return "volumes-from", "--volumes-from is not allowed on this host (it copies another container's mounts, such as another user's workspace)"
	}
	for _, c := range hc.CapAdd {
		switch strings.TrimPrefix(strings.ToUpper(c), "CAP_") {
		case "NET_ADMIN", "SYS_ADMIN", "ALL", "BPF", "SYS_PTRACE", "SYS_MODULE",
			"DAC_READ_SEARCH", // open_by_handle_at: any host file
			"SYS_RAWIO", "MAC_ADMIN", "MAC_OVERRIDE":
			return "capability", fmt.Sprintf("--cap-add %s is not allowed on this host (it could undo the network's enforcement)", c)
		}
	}
	return "", ""
}

// ownMounts is what the request's run token lets it mount (nil without
// a valid token).
func (p *Policy) ownMounts(labels map[string]string) []string {
	tok := labels["clauderon.run"]
	if tok == "" || p.ExpectRun == nil || p.OwnMounts == nil || !p.ExpectRun(tok) {
		return nil
	}
	return p.OwnMounts(tok)
}

// bind is one bind mount of a request.
type bind struct {
	src string
	ro  bool
}

func binds(hc *container.HostConfig) []bind {
	var out []bind
	for _, b := range hc.Binds {
		parts := strings.Split(b, ":")
		if strings.HasPrefix(parts[0], "/") {
			ro := len(parts) > 2 && slices.Contains(strings.Split(parts[2], ","), "ro")
			out = append(out, bind{parts[0], ro})
		}
	}
	for _, m := range hc.Mounts {
		if m.Type == mount.TypeBind || m.Type == "" {
			out = append(out, bind{m.Source, m.ReadOnly})
		}
	}
	return out
}

// volumeOptions reports whether a mount creates a volume with driver
// options: the local driver's type/o/device bind any host path (the state
// dir included) or mount a network file system from the host's namespace.
func volumeOptions(hc *container.HostConfig) bool {
	for _, m := range hc.Mounts {
		if m.VolumeOptions != nil && m.VolumeOptions.DriverConfig != nil && len(m.VolumeOptions.DriverConfig.Options) > 0 {
			return true
		}
	}
	return false
}

// checkMounts refuses a bind of a protected path (or a directory above
// one), except a public file read-only and the paths clauderond itself
// mounts for the request's token (own).
func (p *Policy) checkMounts(hc *container.HostConfig, own []string) (rule, msg string) {
	if volumeOptions(hc) {
		return "volume-options", "volumes with driver options (type, o, device) are not allowed on this host: they can bind any host path or mount from the host's network"
	}
	for _, b := range binds(hc) {
		src := filepath.Clean(b.src)
		if slices.Contains(own, src) || b.ro && slices.Contains(p.PublicFiles, src) {
			continue
		}
		if prot := p.protects(src); prot != "" {
			return "mount", fmt.Sprintf("mounting %s would expose %s to the container; mount something else", b.src, prot)
		}
	}
	return "", ""
}

// protects names the protected path src is, contains or lies in; "" if
// none.
func (p *Policy) protects(src string) string {
	src = filepath.Clean(src)
	if real, err := filepath.EvalSymlinks(src); err == nil {
		src = real
	}
	for _, prot := range p.Protected {
		prot = filepath.Clean(prot)
		if src == prot || strings.HasPrefix(prot, src+"/") || src == "/" || strings.HasPrefix(src, prot+"/") {
			return prot
		}
	}
	return ""
}

func checkExec(body []byte) (rule, msg string) {
	var b struct{ Privileged bool }
	if err := json.Unmarshal(body, &b); err != nil {
		return "unreadable", "cannot read the exec configuration; refusing"
	}
	if b.Privileged {
		return "privileged-exec", "docker exec --privileged is not allowed on this host"
	}
	return "", ""
}

func (p *Policy) checkConnect(netName string) (rule, msg string) {
	if netName == p.Network {
		return "connect", "connecting a running container to " + p.Network + " is not allowed (it may have other ways out); start it with --network " + p.Network
	}
	if !p.allowed(netName) {
		return "connect", fmt.Sprintf("connecting a container to network %q is not allowed on this host", netName)
	}
	return "", ""
}

// checkRawCapabilities refuses HostConfig.Capabilities (a full capability
// set some dockerd versions accept, unknown to the types the plugin reads).
func checkRawCapabilities(body []byte) (rule, msg string) {
	var raw map[string]json.RawMessage
	if json.Unmarshal(body, &raw) != nil {
		return "", ""
	}
	for k, v := range raw {
		if !strings.EqualFold(k, "HostConfig") {
			continue
		}
		var hc map[string]json.RawMessage
		_ = json.Unmarshal(v, &hc)
		for hk, hv := range hc {
			if strings.EqualFold(hk, "Capabilities") && string(hv) != "null" && string(hv) != "[]" {
				return "capability", "HostConfig.Capabilities is not allowed on this host; use --cap-add"
			}
		}
	}
	return "", ""
}

// checkVolumeCreate refuses a volume with driver options (see
// volumeOptions) or a driver other than local.
func checkVolumeCreate(body []byte) (rule, msg string) {
	var b struct {
		Driver     string
		DriverOpts map[string]string
	}
	if len(body) == 0 || json.Unmarshal(body, &b) != nil {
		return "unreadable", "cannot read the volume's configuration; refusing"
	}
	if len(b.DriverOpts) > 0 || b.Driver != "" && b.Driver != "local" {
		return "volume-options", "volumes with a driver or driver options (type, o, device) are not allowed on this host: they can bind any host path or mount from the host's network"
	}
	return "", ""
}

// checkBuild refuses an image build whose RUN steps would use a network
// other than the allowed ones (the default bridge and host included).
func (p *Policy) checkBuild(q url.Values) (rule, msg string) {
	mode := container.NetworkMode(q.Get("networkmode"))
	if mode == "" || mode.IsDefault() {
		mode = "bridge"
	}
	if !mode.IsHost() && !mode.IsContainer() && p.allowed(string(mode)) {
		return "", ""
	}
	return "build", fmt.Sprintf("a build on network %q would run its steps outside clauderon; use docker build --network %s (or --network none)", string(mode), p.Network)
}
