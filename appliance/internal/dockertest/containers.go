package dockertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"sync"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Container is one container as the fake holds it. Accessors return copies.
type Container struct {
	ID         string
	Name       string // without dockerd's leading "/"
	Config     *container.Config
	HostConfig *container.HostConfig
	// Networks are its endpoints by network name; IPAddress, Gateway and
	// MacAddress are set while it runs (or as Put gave them).
	Networks map[string]*network.EndpointSettings
	Status   string // "created", "running" or "exited"
	ExitCode int
	Pid      int    // non-zero while running
	Copies   []Copy // what CopyToContainer extracted, in order

	logs    []frame
	waiters []*waiter
}

type frame struct {
	stream stdcopy.StdType
	data   []byte
}

var validName = regexp.MustCompile(`^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

func (c *Container) running() bool { return c.Status == "running" }

// clone returns a copy that shares nothing mutable with c.
func (c *Container) clone() Container {
	out := *c
	out.logs, out.waiters = nil, nil
	out.Copies = slices.Clone(c.Copies)
	if c.Config != nil {
		cfg := *c.Config
		cfg.Labels = maps.Clone(c.Config.Labels)
		out.Config = &cfg
	}
	if c.HostConfig != nil {
		hc := *c.HostConfig
		out.HostConfig = &hc
	}
	out.Networks = map[string]*network.EndpointSettings{}
	for name, ep := range c.Networks {
		out.Networks[name] = ep.Copy()
	}
	return out
}

func (c *Container) attrs(extra ...string) map[string]string {
	a := maps.Clone(c.Config.Labels)
	if a == nil {
		a = map[string]string{}
	}
	a["name"], a["image"] = c.Name, c.Config.Image
	for i := 0; i+1 < len(extra); i += 2 {
		a[extra[i]] = extra[i+1]
	}
	return a
}

// find resolves an ID or a name (with or without "/"). Caller holds d.mu.
func (d *Docker) find(ref string) (*Container, error) {
	if c, ok := d.containers[ref]; ok {
		return c, nil
	}
	for _, c := range d.containers {
		if c.Name == ref || "/"+c.Name == ref {
			return c, nil
		}
	}
	return nil, notFound("No such container: %s", ref)
}

// ContainerCreate checks the name (unique, valid), the image (local: the
// fake never pulls) and the networks (they must exist), then records it.
func (d *Docker) ContainerCreate(ctx context.Context, cfg *container.Config, hc *container.HostConfig, nc *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	if err := d.begin(ctx, "ContainerCreate", name); err != nil {
		return container.CreateResponse{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if cfg == nil {
		return container.CreateResponse{}, invalid("config cannot be empty in order to create a container")
	}
	if name != "" && !validName.MatchString(name) {
		return container.CreateResponse{}, invalid("Invalid container name (%s), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", name)
	}
	if c, err := d.find(name); name != "" && err == nil {
		return container.CreateResponse{}, conflict("Conflict. The container name \"/%s\" is already in use by container \"%s\". You have to remove (or rename) that container to be able to reuse that name", name, c.ID)
	}
	if d.findImage(cfg.Image) == nil {
		return container.CreateResponse{}, notFound("No such image: %s", cfg.Image)
	}
	if hc == nil {
		hc = &container.HostConfig{}
	}
	eps, err := d.endpoints(hc, nc)
	if err != nil {
		return container.CreateResponse{}, err
	}
	id := d.newID("container")
	if name == "" {
		name = "fake_" + id[:8]
	}
	c := &Container{ID: id, Name: name, HostConfig: hc, Networks: eps, Status: "created"}
	cp := *cfg
	cp.Labels = maps.Clone(cfg.Labels)
	c.Config = &cp
	d.containers[id] = c
	d.created = append(d.created, c.clone())
	d.emit(events.ContainerEventType, events.ActionCreate, id, c.attrs())
	return container.CreateResponse{ID: id}, nil
}

// endpoints resolves the network mode and endpoint configs to networks
// that must exist. Caller holds d.mu.
func (d *Docker) endpoints(hc *container.HostConfig, nc *network.NetworkingConfig) (map[string]*network.EndpointSettings, error) {
	eps := map[string]*network.EndpointSettings{}
	mode := hc.NetworkMode
	switch {
	case mode.IsHost() || mode.IsNone():
		return eps, nil
	case mode.IsContainer():
		if _, err := d.find(mode.ConnectedContainer()); err != nil {
			return nil, err
		}
		return eps, nil
	case mode == "" || mode.IsDefault():
		mode = "bridge"
	}
	eps[string(mode)] = &network.EndpointSettings{}
	if nc != nil {
		for name, ep := range nc.EndpointsConfig {
			eps[name] = ep.Copy()
		}
	}
	for name, ep := range eps {
		n := d.findNet(name)
		if n == nil {
			return nil, notFound("network %s not found", name)
		}
		ep.NetworkID = n.ID
	}
	return eps, nil
}

// ContainerStart connects the networks (allocating addresses), marks it
// running and, with a Program set, runs it to its exit. Starting a
// running container is a no-op, as dockerd's 304.
func (d *Docker) ContainerStart(ctx context.Context, ref string, _ container.StartOptions) error {
	if err := d.begin(ctx, "ContainerStart", ref); err != nil {
		return err
	}
	return d.start(ctx, ref)
}

func (d *Docker) start(ctx context.Context, ref string) error {
	d.mu.Lock()
	c, err := d.find(ref)
	if err == nil && !c.running() {
		err = d.startLocked(c)
	} else if err == nil {
		d.mu.Unlock()
		return nil // already running: the program runs once per start
	}
	if err != nil || d.program == nil {
		d.mu.Unlock()
		return err
	}
	prog, snap := d.program, c.clone()
	d.mu.Unlock()
	out := &frameBuf{}
	code, perr := prog(ctx, snap, frameWriter{out, stdcopy.Stdout}, frameWriter{out, stdcopy.Stderr})
	d.mu.Lock()
	defer d.mu.Unlock()
	c.logs = append(c.logs, out.frames...)
	if perr != nil {
		code = 128
	}
	if c.running() {
		d.exitLocked(c, code, "", false)
	}
	if perr != nil {
		return fmt.Errorf("starting container %s: %w", ref, perr)
	}
	return nil
}

func (d *Docker) startLocked(c *Container) error {
	if mode := c.HostConfig.NetworkMode; mode.IsContainer() {
		if target, err := d.find(mode.ConnectedContainer()); err != nil || !target.running() {
			return conflict("cannot join network of a non running container: %s", mode.ConnectedContainer())
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Networks)) {
		if err := d.connectLocked(c, name); err != nil {
			return err
		}
	}
	d.seq++
	c.Status, c.ExitCode, c.Pid = "running", 0, 1000+d.seq
	d.emit(events.ContainerEventType, events.ActionStart, c.ID, c.attrs())
	return nil
}

// frameBuf collects a program's output in the order it was written.
type frameBuf struct {
	mu     sync.Mutex
	frames []frame
}

// frameWriter writes one stream of a frameBuf; safe for concurrent use.
type frameWriter struct {
	buf    *frameBuf
	stream stdcopy.StdType
}

func (w frameWriter) Write(p []byte) (int, error) {
	w.buf.mu.Lock()
	defer w.buf.mu.Unlock()
	w.buf.frames = append(w.buf.frames, frame{w.stream, bytes.Clone(p)})
	return len(p), nil
}

// exitLocked ends c's process: kill (when signal is set), die, network
// disconnect for every connected endpoint, stop (when stopped).
func (d *Docker) exitLocked(c *Container, code int, signal string, stopped bool) {
	if signal != "" {
		d.emit(events.ContainerEventType, events.ActionKill, c.ID, c.attrs("signal", signal))
	}
	c.Status, c.ExitCode, c.Pid = "exited", code, 0
	d.emit(events.ContainerEventType, events.ActionDie, c.ID, c.attrs("exitCode", strconv.Itoa(code)))
	for _, name := range slices.Sorted(maps.Keys(c.Networks)) {
		ep := c.Networks[name]
		if ep.IPAddress == "" {
			continue
		}
		d.emit(events.NetworkEventType, events.ActionDisconnect, ep.NetworkID,
			map[string]string{"container": c.ID, "name": name, "type": d.netDriver(name)})
		ep.IPAddress, ep.Gateway, ep.MacAddress, ep.IPPrefixLen = "", "", "", 0
	}
	if stopped {
		d.emit(events.ContainerEventType, events.ActionStop, c.ID, c.attrs())
	}
	d.releaseLocked(c, false)
}

// ContainerStop stops a running container (exit code 143, as SIGTERM);
// stopping a stopped one is a no-op, as dockerd's 304.
func (d *Docker) ContainerStop(ctx context.Context, ref string, _ container.StopOptions) error {
	return d.onContainer(ctx, "ContainerStop", ref, func(c *Container) error {
		if c.running() {
			d.exitLocked(c, 143, "15", true)
		}
		return nil
	})
}

// ContainerRestart stops the container if it runs, starts it, and emits
// restart.
func (d *Docker) ContainerRestart(ctx context.Context, ref string, _ container.StopOptions) error {
	if err := d.begin(ctx, "ContainerRestart", ref); err != nil {
		return err
	}
	d.mu.Lock()
	c, err := d.find(ref)
	if err == nil && c.running() {
		d.exitLocked(c, 143, "15", true)
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if err := d.start(ctx, ref); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.emit(events.ContainerEventType, events.ActionRestart, c.ID, c.attrs())
	return nil
}

// ContainerRemove refuses a running container unless forced (then kills
// it), releases "removed" waiters and emits destroy.
func (d *Docker) ContainerRemove(ctx context.Context, ref string, o container.RemoveOptions) error {
	return d.onContainer(ctx, "ContainerRemove", ref, func(c *Container) error {
		if c.running() {
			if !o.Force {
				return conflict("You cannot remove a running container %s. Stop the container before attempting removal or force remove", c.ID)
			}
			d.exitLocked(c, 137, "9", false)
		}
		delete(d.containers, c.ID)
		d.releaseLocked(c, true)
		d.emit(events.ContainerEventType, events.ActionDestroy, c.ID, c.attrs())
		return nil
	})
}

// ContainerLogs returns the container's output: raw with a TTY, else in
// stdcopy frames. Follow is not supported (the output so far, then EOF).
func (d *Docker) ContainerLogs(ctx context.Context, ref string, o container.LogsOptions) (io.ReadCloser, error) {
	if err := d.begin(ctx, "ContainerLogs", ref); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(ref)
	if err != nil {
		return nil, err
	}
	if !o.ShowStdout && !o.ShowStderr {
		return nil, invalid("Bad parameters: you must choose at least one stream")
	}
	var buf bytes.Buffer
	for _, f := range c.logs {
		switch {
		case f.stream == stdcopy.Stdout && !o.ShowStdout, f.stream == stdcopy.Stderr && !o.ShowStderr:
		case c.Config.Tty:
			buf.Write(f.data)
		default:
			_, _ = stdcopy.NewStdWriter(&buf, f.stream).Write(f.data)
		}
	}
	return io.NopCloser(&buf), nil
}
