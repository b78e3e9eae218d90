// Package dockertest is an in-memory dockerd for the appliance's tests: one
// Docker value answers the client methods that identity, bridge, session,
// doctor and appliance declare in their DockerAPI interfaces, and enforces
// what dockerd enforces where those tests rely on it:
//
//   - container and network names are unique (errors wrap cerrdefs.ErrConflict);
//     an unknown container, network, image or exec wraps cerrdefs.ErrNotFound;
//   - containers move created → running → exited; exec and removal without
//     force need a running (resp. a stopped) container; an image in use
//     cannot be removed; a network with running endpoints cannot be removed;
//   - containers get an address from their network's IPAM subnet at start;
//   - every state change is an event, in dockerd's order (container create;
//     network connect, container start; container kill, die, network
//     disconnect, container stop; container destroy; kill only when the
//     fake sends the signal, stop only for ContainerStop), delivered to
//     every Events subscriber and recorded in History.
//
// Tests shape it with knobs rather than quirks: Fail and Before make a
// method fail or run a hook, SetProgram says what a started container does,
// Put, Update and Forget change state behind the event stream (as if it
// happened while nobody listened), and OnSubscribe hands each Events
// subscription to the test, which can Send it raw messages or Fail it.
//
// Be aware: it does not pull images, run processes, model filesystems
// (CopyToContainer records the archive's entries), follow logs, or support
// filters beyond those named on each method. It never talks to a real
// dockerd and imports no clauderond package, so any appliance package's
// tests may use it.
package dockertest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
)

// Docker is the fake daemon. Create it with New; it is safe for
// concurrent use.
type Docker struct {
	mu          sync.Mutex
	seq         int
	containers  map[string]*Container // by ID
	created     []Container           // snapshot of every container at create
	nets        map[string]*network.Inspect
	images      map[string]*img // by image ID
	execs       map[string]*Exec
	execOrder   []string
	subs        map[*Subscriber]struct{}
	history     []events.Message
	calls       map[string]int
	before      map[string]Hook
	program     Program
	onSubscribe func(context.Context, *Subscriber)
}

// Hook runs at the start of a call of one method, before the fake looks at
// its state, with the call's context and its first name or ID argument
// ("" when there is none). A non-nil error is returned by the call as is.
// Hooks run without the fake's lock, so they may call the fake.
type Hook func(ctx context.Context, ref string) error

// methods are the client methods the fake serves (the knobs' keys).
var methods = []string{
	"ContainerCreate", "ContainerStart", "ContainerStop", "ContainerRestart", "ContainerInspect",
	"ContainerList", "ContainerRemove", "ContainerWait", "ContainerLogs",
	"ContainerExecCreate", "ContainerExecStart", "ContainerExecInspect", "CopyToContainer",
	"ImageInspect", "ImageImport", "ImageList", "ImageRemove",
	"NetworkInspect", "NetworkCreate", "NetworkRemove", "Events",
}

// New returns a daemon with dockerd's default "bridge" network
// (172.17.0.0/16) and nothing else.
func New() *Docker {
	d := &Docker{containers: map[string]*Container{}, nets: map[string]*network.Inspect{},
		images: map[string]*img{}, execs: map[string]*Exec{}, subs: map[*Subscriber]struct{}{},
		calls: map[string]int{}, before: map[string]Hook{}}
	id := d.newID("network")
	d.nets[id] = &network.Inspect{Name: "bridge", ID: id, Driver: "bridge", Scope: "local",
		IPAM:    network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: "172.17.0.0/16", Gateway: "172.17.0.1"}}},
		Options: map[string]string{"com.docker.network.bridge.default_bridge": "true"}}
	return d
}

// Before makes every later call of method run h first (nil removes it).
// It panics on a method the fake does not serve, so a typo fails loudly.
func (d *Docker) Before(method string, h Hook) {
	if !slices.Contains(methods, method) {
		panic("dockertest: no method " + strconv.Quote(method))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h == nil {
		delete(d.before, method)
		return
	}
	d.before[method] = h
}

// Fail makes every later call of method return err (nil: succeed again).
func (d *Docker) Fail(method string, err error) {
	if err == nil {
		d.Before(method, nil)
		return
	}
	d.Before(method, func(context.Context, string) error { return err })
}

// Calls is how many times method has been called, failed calls included.
func (d *Docker) Calls(method string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[method]
}

// History is every event the fake emitted, oldest first, whether or not
// anyone subscribed (Subscriber.Send's messages are not in it).
func (d *Docker) History() []events.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.history)
}

// begin counts the call and runs its hook; then the context must be live.
func (d *Docker) begin(ctx context.Context, method, ref string) error {
	d.mu.Lock()
	d.calls[method]++
	h := d.before[method]
	d.mu.Unlock()
	if h != nil {
		if err := h(ctx, ref); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// onContainer runs begin for method, then f on the container ref names
// with the fake locked.
func (d *Docker) onContainer(ctx context.Context, method, ref string, f func(c *Container) error) error {
	if err := d.begin(ctx, method, ref); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(ref)
	if err != nil {
		return err
	}
	return f(c)
}

// newID returns a dockerd-shaped 64-hex ID, deterministic per fake.
func (d *Docker) newID(kind string) string {
	d.seq++
	sum := sha256.Sum256([]byte(kind + "/" + strconv.Itoa(d.seq)))
	return hex.EncodeToString(sum[:])
}

// emit records m and queues it for every subscriber whose filters match.
// The caller holds d.mu.
func (d *Docker) emit(typ events.Type, action events.Action, id string, attrs map[string]string) {
	now := time.Now()
	m := events.Message{Type: typ, Action: action, Scope: "local", Time: now.Unix(), TimeNano: now.UnixNano(),
		Actor: events.Actor{ID: id, Attributes: attrs}}
	d.history = append(d.history, m)
	for s := range d.subs {
		if s.wants(m) {
			s.queueLocked(m)
		}
	}
}

func notFound(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), cerrdefs.ErrNotFound)
}

func conflict(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), cerrdefs.ErrConflict)
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), cerrdefs.ErrInvalidArgument)
}

func forbidden(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), cerrdefs.ErrPermissionDenied)
}
