package kubepods

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultCNIResultsDir is where libcni caches the result of each
// attachment (one file per pod interface).
const DefaultCNIResultsDir = "/var/lib/cni/results"

// maxCNIFileBytes caps one cache file; a result is a few KiB.
const maxCNIFileBytes = 1 << 20

// CNIResults returns a Veth resolver that finds the host-side veth of the
// pod holding ip in libcni's results cache in dir: the file whose result
// lists ip, and in it the interface that is outside the pod (no sandbox)
// and is not the bridge. With bridge "" the bridge is recognised by
// position (the bridge plugin lists it first, before the host veth).
//
// A file that names the pod it was made for (libcni's cniArgs carry
// K8S_POD_UID) counts only for that pod: a stale result of a deleted pod
// that held the same address never moves the address to its old veth.
// It reads only regular files (never through a symlink), each bounded, and
// skips files it cannot parse. When several files hold ip (a stale cache),
// the most recently modified wins. Parsed files are kept, keyed by name,
// size and mtime, so a lookup only reads what changed.
func CNIResults(dir, bridge string) func(ip netip.Addr, podUID string) (string, error) {
	c := &cniCache{dir: dir, bridge: bridge, files: map[string]cniFile{}}
	return c.lookup
}

type cniCache struct {
	dir, bridge string
	mu          sync.Mutex
	files       map[string]cniFile // by file name
}

// cniFile is what one cache file said, or why it is of no use.
type cniFile struct {
	mtime time.Time
	size  int64
	ips   []netip.Addr
	pod   string // K8S_POD_UID from the file's cniArgs, "" when absent
	veth  string
	err   error // no usable veth (with ips set) or no usable result
}

// cniResult is the part of a CNI result this package reads.
type cniResult struct {
	Interfaces []struct {
		Name    string `json:"name"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Address string `json:"address"`
	} `json:"ips"`
}

func (c *cniCache) lookup(ip netip.Addr, podUID string) (string, error) {
	ip = ip.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return "", fmt.Errorf("reading the CNI results cache: %w", err)
	}
	seen := make(map[string]bool, len(ents))
	var best *cniFile
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue // symlinks, directories, devices
		}
		seen[e.Name()] = true
		f, ok := c.file(e)
		forPod := f.pod == "" || podUID == "" || f.pod == podUID
		if ok && forPod && slices.Contains(f.ips, ip) && (best == nil || f.mtime.After(best.mtime)) {
			best = &f
		}
	}
	for name := range c.files {
		if !seen[name] {
			delete(c.files, name)
		}
	}
	switch {
	case best == nil:
		return "", fmt.Errorf("no CNI result in %s holds %s", c.dir, ip)
	case best.err != nil:
		return "", best.err
	}
	return best.veth, nil
}

// file returns the parsed cache file e, from the cache when its size and
// mtime are unchanged; ok false when it holds no addresses.
func (c *cniCache) file(e fs.DirEntry) (cniFile, bool) {
	info, err := e.Info()
	if err != nil {
		return cniFile{}, false
	}
	if f, ok := c.files[e.Name()]; ok && f.mtime.Equal(info.ModTime()) && f.size == info.Size() {
		return f, len(f.ips) > 0
	}
	f := parseCNIFile(filepath.Join(c.dir, e.Name()), c.bridge)
	if f.mtime.IsZero() {
		return f, false // not a regular file when opened: do not cache
	}
	c.files[e.Name()] = f
	return f, len(f.ips) > 0
}

// parseCNIFile reads one cache file. The mtime and size are the opened
// file's, so a file replaced meanwhile is read again next time.
func parseCNIFile(path, bridge string) cniFile {
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return cniFile{err: err}
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return cniFile{err: fmt.Errorf("%s is not a regular file", path)}
	}
	f := cniFile{mtime: st.ModTime(), size: st.Size()}
	b, err := io.ReadAll(io.LimitReader(fd, maxCNIFileBytes+1))
	if err != nil || len(b) > maxCNIFileBytes {
		f.err = fmt.Errorf("%s: unreadable or larger than %d bytes", path, maxCNIFileBytes)
		return f
	}
	res, pod, err := decodeCNICache(b)
	if err != nil {
		f.err = fmt.Errorf("%s: %w", path, err)
		return f
	}
	f.pod = pod
	for _, a := range res.IPs {
		if p, err := netip.ParsePrefix(a.Address); err == nil {
			f.ips = append(f.ips, p.Addr().Unmap())
		}
	}
	f.veth, f.err = hostVeth(res, bridge)
	if f.err != nil {
		f.err = fmt.Errorf("%s: %w", path, f.err)
	}
	return f
}

// decodeCNICache decodes a libcni cache file: {"kind":"cniCacheV1",
// "cniArgs":[["K8S_POD_UID","…"],…],"result":{…}}, or a bare result as
// older libcni wrote it; it returns the result and the pod's UID ("" when
// the file names none).
func decodeCNICache(b []byte) (*cniResult, string, error) {
	var v struct {
		Kind    string     `json:"kind"`
		Result  *cniResult `json:"result"`
		CNIArgs [][]string `json:"cniArgs"`
		cniResult
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, "", fmt.Errorf("decoding the CNI result: %w", err)
	}
	switch {
	case v.Kind == "cniCacheV1" && v.Result != nil:
		pod := ""
		for _, kv := range v.CNIArgs {
			if len(kv) == 2 && kv[0] == "K8S_POD_UID" {
				pod = kv[1]
			}
		}
		return v.Result, pod, nil
	case v.Kind == "" && len(v.IPs) > 0:
		return &v.cniResult, "", nil
	}
	return nil, "", fmt.Errorf("not a CNI result (kind %q)", v.Kind)
}

// hostVeth picks the host side of the pod's veth from a result's
// interfaces: not in a sandbox, and not the bridge.
func hostVeth(res *cniResult, bridge string) (string, error) {
	var cands []string
	onBridge := bridge == ""
	for i, itf := range res.Interfaces {
		switch {
		case itf.Sandbox != "":
		case bridge != "" && itf.Name == bridge:
			onBridge = true
		case bridge == "" && i == 0 && len(res.Interfaces) >= 3:
			// the bridge plugin's bridge
		default:
			cands = append(cands, itf.Name)
		}
	}
	if !onBridge {
		return "", fmt.Errorf("result is not for bridge %s", bridge)
	}
	if len(cands) != 1 {
		return "", fmt.Errorf("result names %d host-side interfaces %v; want one", len(cands), cands)
	}
	if err := validIfName(cands[0]); err != nil {
		return "", err
	}
	return cands[0], nil
}

// validIfName accepts what Linux accepts as an interface name, so that a
// name from the cache can go into an nftables rule.
func validIfName(n string) error {
	if n == "" || len(n) > 15 || n == "." || n == ".." || strings.ContainsAny(n, "/: \t\n\x00") {
		return fmt.Errorf("invalid interface name %q", n)
	}
	return nil
}
