package doctor

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"
)

// Probe output prefixes written by `clauderond probe` (cmd/clauderond/probe.go).
const (
	probeStatusPrefix = "probe: status "
	probeTLSPrefix    = "probe: tls verification failed: "
	probeFailPrefix   = "probe: failed: "
)

// LabelDoctor marks probe containers (and lets an operator clean them up).
const LabelDoctor = "clauderon.doctor"

const probeCAPath = "/etc/ssl/certs/ca-certificates.crt"

func probeSteps(ctx context.Context, d Deps, ready bool) []api.DoctorStep {
	const name = "probe image"
	if d.Docker == nil {
		return []api.DoctorStep{{Name: name, Detail: "no Docker client", Fix: "start Docker: sudo systemctl start docker, then sudo systemctl restart clauderond"}}
	}
	if !ready {
		return []api.DoctorStep{{Name: "end-to-end probe", Detail: "skipped: the daemon is not ready", Fix: "fix the failing steps above, then run clauderon doctor again"}}
	}
	ctx, cancel := context.WithTimeout(ctx, d.ProbeTimeout)
	defer cancel()
	ref, err := ensureProbeImage(ctx, d)
	if err != nil {
		return []api.DoctorStep{{Name: name, Detail: err.Error(), Fix: "build clauderond statically (CGO_ENABLED=0 make build) and check Docker: docker info"}}
	}
	steps := []api.DoctorStep{{Name: name, OK: true, Detail: ref}}
	res, err := runProbeContainer(ctx, d, ref)
	if err != nil {
		return append(steps, api.DoctorStep{Name: "probe container trusts the CA", Detail: err.Error(),
			Fix: "check Docker and the network: docker network inspect " + d.Network + "; sudo systemctl restart clauderond recreates it"})
	}
	steps = append(steps, trustStep(res))
	if !res.gotStatus {
		return steps
	}
	return append(steps, injectedStep(ctx, d, res))
}

// probeResult is what one probe container reported.
type probeResult struct {
	container, id string
	output        string
	exitCode      int64
	gotStatus     bool
	status        int
}

func trustStep(r probeResult) api.DoctorStep {
	s := api.DoctorStep{Name: "probe container trusts the CA"}
	out := strings.TrimSpace(r.output)
	switch {
	case r.gotStatus:
		s.OK = true
		s.Detail = fmt.Sprintf("%s got HTTP %d over TLS verified against the clauderon CA", r.container, r.status)
	case strings.Contains(out, probeTLSPrefix):
		s.Detail = lineWith(out, probeTLSPrefix)
		s.Fix = "the certificate the container saw is not from the clauderon CA: the redirect to the daemon is missing (sudo systemctl reload clauderond) or the CA changed since the daemon started (sudo systemctl restart clauderond)"
	default:
		s.Detail = fmt.Sprintf("probe exited %d: %s", r.exitCode, lastLines(out, 3))
		s.Fix = "the container could not reach https://api.anthropic.com through the daemon: check clauderon status (listeners, enforcement) and clauderon audit --container " + r.container
	}
	return s
}

// probeRepo is the repository of the doctor's probe images.
const probeRepo = "clauderon-probe"

// ensureProbeImage imports clauderon-probe:<version>-<hash> from the daemon's
// own executable unless that exact image exists.
func ensureProbeImage(ctx context.Context, d Deps) (string, error) {
	exe, err := os.ReadFile(d.SelfExe)
	if err != nil {
		return "", fmt.Errorf("reading the daemon executable: %w", err)
	}
	if err := checkStatic(exe); err != nil {
		return "", err
	}
	sum := sha256.Sum256(exe)
	ref := probeRepo + ":" + tagSafe(d.Version) + "-" + hex.EncodeToString(sum[:6])
	if _, err := d.Docker.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	} else if !errdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspecting %s: %w", ref, err)
	}
	archive, err := probeArchive(exe)
	if err != nil {
		return "", err
	}
	rc, err := d.Docker.ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(archive), SourceName: "-"}, ref, image.ImportOptions{})
	if err != nil {
		return "", fmt.Errorf("importing %s: %w", ref, err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return "", fmt.Errorf("importing %s: %w", ref, err)
	}
	removeOldProbeImages(ctx, d.Docker, ref)
	return ref, nil
}

// removeOldProbeImages deletes the probe images of earlier daemon builds
// (each build imports its own), keeping keep. Best effort: an image still in
// use or already gone is left to the next run.
func removeOldProbeImages(ctx context.Context, dc Docker, keep string) {
	list, err := dc.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", probeRepo+":*"))})
	if err != nil {
		return
	}
	for _, im := range list {
		for _, tag := range im.RepoTags {
			if strings.HasPrefix(tag, probeRepo+":") && tag != keep {
				_, _ = dc.ImageRemove(ctx, tag, image.RemoveOptions{PruneChildren: true})
			}
		}
	}
}

// checkStatic refuses a dynamically linked executable: it cannot run in a
// FROM-scratch image.
func checkStatic(exe []byte) error {
	f, err := elf.NewFile(bytes.NewReader(exe))
	if err != nil {
		return fmt.Errorf("the daemon executable is not an ELF file: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("the daemon executable is dynamically linked and cannot run in the probe image")
		}
	}
	return nil
}

var tagBad = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

func tagSafe(v string) string {
	v = tagBad.ReplaceAllString(v, "_")
	v = strings.TrimLeft(v, ".-")
	if v == "" {
		v = "dev"
	}
	if len(v) > 100 {
		v = v[:100]
	}
	return v
}

// probeArchive is a root filesystem holding only /clauderond.
func probeArchive(exe []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, dir := range []string{"etc/", "tmp/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return nil, fmt.Errorf("building probe image: %w", err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "clauderond", Mode: 0o755, Size: int64(len(exe)), ModTime: epoch}); err != nil {
		return nil, fmt.Errorf("building probe image: %w", err)
	}
	if _, err := tw.Write(exe); err != nil {
		return nil, fmt.Errorf("building probe image: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("building probe image: %w", err)
	}
	return buf.Bytes(), nil
}

// runProbeContainer runs `/clauderond probe URL` on the bridge as nobody,
// trusting only the clauderon CA, and always removes the container.
func runProbeContainer(ctx context.Context, d Deps, ref string) (probeResult, error) {
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	res := probeResult{container: "clauderon-doctor-" + hex.EncodeToString(suffix)}
	cfg := &container.Config{
		Image:  ref,
		Cmd:    []string{"/clauderond", "probe", "--timeout", "20s", d.ProbeURL},
		Env:    []string{"SSL_CERT_FILE=" + probeCAPath},
		User:   "65534:65534",
		Labels: map[string]string{LabelDoctor: "probe", "clauderon.profile": "default"},
	}
	if d.ProbeToken != nil { // the daemon's own container: Docker's authorization plugin lets it through
		tok, err := d.ProbeToken([]string{d.CAPath})
		if err != nil {
			return res, fmt.Errorf("registering the probe container: %w", err)
		}
		cfg.Labels["clauderon.run"] = tok
	}
	hc := &container.HostConfig{
		NetworkMode: container.NetworkMode(d.Network),
		Mounts:      []mount.Mount{{Type: mount.TypeBind, Source: d.CAPath, Target: probeCAPath, ReadOnly: true}},
	}
	created, err := d.Docker.ContainerCreate(ctx, cfg, hc, nil, nil, res.container)
	if err != nil {
		return res, fmt.Errorf("creating probe container: %w", err)
	}
	res.id = created.ID
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		_ = d.Docker.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true})
	}()
	waitC, errC := d.Docker.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	if err := d.Docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return res, fmt.Errorf("starting probe container: %w", err)
	}
	select {
	case w := <-waitC:
		res.exitCode = w.StatusCode
	case err := <-errC:
		return res, fmt.Errorf("waiting for probe container: %w", err)
	case <-ctx.Done():
		return res, fmt.Errorf("probe container did not finish: %w", ctx.Err())
	}
	out, err := containerOutput(ctx, d.Docker, created.ID)
	if err != nil {
		return res, err
	}
	res.output = out
	if line := lineWith(out, probeStatusPrefix); line != "" {
		if n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, probeStatusPrefix))); err == nil {
			res.gotStatus, res.status = true, n
		}
	}
	return res, nil
}

func containerOutput(ctx context.Context, dc Docker, id string) (string, error) {
	rc, err := dc.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return "", fmt.Errorf("reading probe output: %w", err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, io.LimitReader(rc, 1<<20)); err != nil {
		return "", fmt.Errorf("reading probe output: %w", err)
	}
	return buf.String(), nil
}

func lineWith(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func lastLines(out string, n int) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// auditLine is the part of an audit.jsonl record doctor reads.
type auditLine struct {
	Container    string `json:"container"`
	ContainerID  string `json:"container_id"`
	Host         string `json:"host"`
	SNI          string `json:"sni"`
	Path         string `json:"path"`
	Status       int    `json:"status"`
	Decision     string `json:"decision"`
	Rule         string `json:"rule"`
	AuthInjected bool   `json:"auth_injected"`
	Error        string `json:"error"`
}

// injectedStep finds the probe's request in the audit log: it must have been
// intercepted with a credential injected and not refused upstream.
func injectedStep(ctx context.Context, d Deps, r probeResult) api.DoctorStep {
	s := api.DoctorStep{Name: "credential injected"}
	host := probeHost(d.ProbeURL)
	rec, err := waitAuditLine(ctx, d.AuditPath, d.AuditWait, r, host)
	switch {
	case err != nil:
		s.Detail = err.Error()
		s.Fix = "the probe's request never reached the interceptor for " + host + ": check that a rule covers it (default_rules: true) and clauderon audit --container " + r.container
	case !rec.AuthInjected:
		s.Detail = fmt.Sprintf("%s %s: decision %s, rule %q, no credential injected (status %d, error %q)", host, rec.Path, rec.Decision, rec.Rule, rec.Status, rec.Error)
		s.Fix = "give the default profile an anthropic credential: CLAUDE_CODE_OAUTH_TOKEN=… in /etc/clauderon/credentials.env (0600, re-read on change) or <state_dir>/secrets/anthropic, then sudo systemctl reload clauderond"
	case rec.Status == 401 || rec.Status == 403:
		s.Detail = fmt.Sprintf("credential injected but %s answered %d", host, rec.Status)
		s.Fix = "the credential is expired or revoked: create a new one (claude setup-token), update it, then sudo systemctl reload clauderond"
	default:
		s.OK = true
		s.Detail = fmt.Sprintf("%s %s: credential injected by rule %q, upstream answered %d", host, rec.Path, rec.Rule, rec.Status)
	}
	return s
}

func probeHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Hostname()
}

// waitAuditLine polls the audit log briefly (the writer flushes
// asynchronously) for the probe container's request to host.
func waitAuditLine(ctx context.Context, path string, wait time.Duration, r probeResult, host string) (auditLine, error) {
	deadline := time.Now().Add(wait)
	for {
		rec, ok, err := findAuditLine(path, r, host)
		if err != nil {
			return rec, err
		}
		if ok {
			return rec, nil
		}
		if time.Now().After(deadline) {
			return rec, fmt.Errorf("no audit line in %s for container %s and host %s", path, r.container, host)
		}
		select {
		case <-ctx.Done():
			return rec, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// findAuditLine scans the last 4 MiB of the audit log for the newest HTTP
// record from the probe container to host.
func findAuditLine(path string, r probeResult, host string) (auditLine, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return auditLine{}, false, fmt.Errorf("reading audit log: %w", err)
	}
	defer f.Close()
	const window = 4 << 20
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		if _, err := f.Seek(fi.Size()-window, io.SeekStart); err != nil {
			return auditLine{}, false, fmt.Errorf("reading audit log: %w", err)
		}
	}
	var found auditLine
	ok := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l auditLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		mine := l.Container == r.container || (r.id != "" && l.ContainerID != "" && (strings.HasPrefix(r.id, l.ContainerID) || strings.HasPrefix(l.ContainerID, r.id)))
		if mine && (l.Host == host || l.SNI == host) && l.Path != "" {
			found, ok = l, true
		}
	}
	return found, ok, sc.Err()
}
