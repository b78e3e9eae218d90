//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The "outside": a network namespace routed from the host over a veth pair,
// standing in for the internet. A recorder in it logs every TCP, UDP and
// ICMP hit. Container traffic reaches it only by being forwarded by the
// host, exactly like traffic to a real remote address would.
const (
	outsideNS     = prefix + "-out"
	vethPrefix    = "ce2e"
	vethHost      = vethPrefix + "-out-h"
	vethNS        = vethPrefix + "-out-n"
	outsideHostIP = "10.234.72.1"
	outsideIP     = "10.234.72.2"
	outsideHost6  = "fd42:e2e:72::1"
	outsideIP6    = "fd42:e2e:72::2"
	recorderTCP   = "22,25,53,80,443,853,2375,3128,5432,6443,8053,8080,8443,9418"
	recorderUDP   = "53,123,443,500,853,4500,5353,51820"
)

// hit is one recorder line.
type hit struct {
	Time  time.Time `json:"time"`
	Proto string    `json:"proto"`
	Port  int       `json:"port"`
	Src   string    `json:"src"`
	Data  string    `json:"data"`
}

type outsideHost struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	hits []hit
}

func (s *suite) startOutside() error {
	o := &outsideHost{done: make(chan struct{})}
	s.outside = o // close() removes whatever part of the host got created
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	steps := [][]string{
		{"netns", "add", outsideNS},
		{"link", "add", vethHost, "type", "veth", "peer", "name", vethNS},
		{"link", "set", vethNS, "netns", outsideNS},
		{"addr", "add", outsideHostIP + "/24", "dev", vethHost},
		{"-6", "addr", "add", outsideHost6 + "/64", "dev", vethHost, "nodad"},
		{"link", "set", vethHost, "up"},
		{"-n", outsideNS, "link", "set", "lo", "up"},
		{"-n", outsideNS, "addr", "add", outsideIP + "/24", "dev", vethNS},
		{"-n", outsideNS, "-6", "addr", "add", outsideIP6 + "/64", "dev", vethNS, "nodad"},
		{"-n", outsideNS, "link", "set", vethNS, "up"},
		{"-n", outsideNS, "route", "add", "default", "via", outsideHostIP},
		{"-n", outsideNS, "-6", "route", "add", "default", "via", outsideHost6},
	}
	for _, args := range steps {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	o.cmd = exec.Command("ip", "netns", "exec", outsideNS, filepath.Join(s.hostBin, "e2etool"), "recorder",
		"-tcp", recorderTCP, "-udp", recorderUDP, "-icmp")
	stdout, err := o.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	o.cmd.Stderr = &stderr
	if err := o.cmd.Start(); err != nil {
		return fmt.Errorf("starting the recorder: %w", err)
	}
	ready := make(chan struct{})
	go o.readHits(stdout, ready)
	select {
	case <-ready:
		return nil
	case <-o.done:
		return fmt.Errorf("recorder exited: %s", stderr.String())
	case <-time.After(20 * time.Second):
		return fmt.Errorf("recorder not ready after 20s: %s", stderr.String())
	}
}

// readHits consumes the recorder's stdout until it exits, then reaps it.
func (o *outsideHost) readHits(r io.Reader, ready chan<- struct{}) {
	defer close(o.done)
	defer func() { _ = o.cmd.Wait() }()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "READY" {
			close(ready)
			continue
		}
		var h hit
		if json.Unmarshal([]byte(line), &h) == nil {
			o.mu.Lock()
			o.hits = append(o.hits, h)
			o.mu.Unlock()
		}
	}
}

// hitsSince returns the hits recorded after t0.
func (o *outsideHost) hitsSince(t0 time.Time) []hit {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []hit
	for _, h := range o.hits {
		if !h.Time.Before(t0) {
			out = append(out, h)
		}
	}
	return out
}

func (o *outsideHost) close() {
	if o.cmd != nil && o.cmd.Process != nil {
		_ = o.cmd.Process.Kill()
		<-o.done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run(ctx, "ip", "link", "delete", vethHost)
	run(ctx, "ip", "netns", "delete", outsideNS)
}
