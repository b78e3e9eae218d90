package session

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/clauderon/clauderond/appliance/internal/dockertest"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeDocker is dockerd in memory (appliance/internal/dockertest) seen the
// way the session tests look at it: containers under the short keys
// id0001, id0002… in creation order (or the key a test put one under),
// execs as "user=<user>" plus the command. Tests read and change that view
// between calls; every call first turns their changes into what they stand
// for (a container added: someone else's, Put; one deleted: removed by
// someone else; one marked exited: its process ended), then reads the
// fake's state back.
//
// Two session rules are stricter than dockerd's and are kept as hooks: the
// manager never starts a running container (dockerd would answer 304) and
// copies its files in before the start (dockerd would allow it after,
// racing the agent).
type fakeDocker struct {
	d          *dockertest.Docker
	mu         sync.Mutex
	containers map[string]*fakeContainer
	execs      [][]string
	nextID     int
	failStart  error  // every ContainerStart fails with it
	logs       []byte // every container's output (multiplexed when not TTY)
}

type fakeContainer struct {
	id      string // dockertest's ID
	name    string
	cfg     *container.Config
	hc      *container.HostConfig
	network string
	started bool
	copies  []string // "path uid:gid copyuid=…" of each archive entry copied in
	exit    int
	status  string
	logged  bool // logs handed to dockertest
}

func newFakeDocker() *fakeDocker {
	d := dockertest.New()
	d.AddImage("clauderon-agent:latest")
	d.AddImage("img-with-home:1", "PATH=/bin", "HOME=/home/node")
	if _, err := d.NetworkCreate(context.Background(), "clauderon", network.CreateOptions{Driver: "bridge",
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.213.0.0/24"}}}}); err != nil {
		panic(err)
	}
	f := &fakeDocker{d: d, containers: map[string]*fakeContainer{}}
	d.Before("ContainerStart", f.strictStart)
	d.Before("CopyToContainer", f.copyBeforeStart)
	return f
}

var _ DockerAPI = (*fakeDocker)(nil)

func (f *fakeDocker) strictStart(_ context.Context, ref string) error {
	f.mu.Lock()
	err := f.failStart
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if c, ok := f.d.Container(ref); ok && c.Status == "running" {
		return fmt.Errorf("fake: container %s started while running", ref)
	}
	return nil
}

func (f *fakeDocker) copyBeforeStart(_ context.Context, ref string) error {
	if c, ok := f.d.Container(ref); ok && c.Status != "created" {
		return errors.New("fake: copy after start races the agent")
	}
	return nil
}

// find looks a container up in the tests' view.
func (f *fakeDocker) find(idOrName string) (*fakeContainer, error) {
	for key, c := range f.containers {
		if key == idOrName || c.id == idOrName || c.name == idOrName {
			return c, nil
		}
	}
	return nil, errdefs.NotFound(fmt.Errorf("no such container: %s", idOrName))
}

// push makes dockertest match what the test changed in its view.
func (f *fakeDocker) push() {
	f.mu.Lock()
	defer f.mu.Unlock()
	live := map[string]dockertest.Container{}
	for _, c := range f.d.Containers() {
		live[c.ID] = c
	}
	viewed := map[string]bool{}
	for _, c := range f.containers {
		viewed[c.id] = true
		dc, ok := live[c.id]
		switch {
		case !ok:
			f.d.Put(dockertest.Container{ID: c.id, Name: c.name, Config: c.cfg, HostConfig: c.hc, Status: c.status, ExitCode: c.exit})
		case c.status == "exited" && dc.Status == "running":
			_ = f.d.Exit(c.id, c.exit)
		}
		if f.logs != nil && !c.logged {
			c.logged = true
			for _, fr := range demux(f.logs) {
				_ = f.d.Output(c.id, fr.stream, fr.data)
			}
		}
	}
	for id := range live {
		if !viewed[id] {
			_ = f.d.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true})
		}
	}
}

// pull reads dockertest's state back into the tests' view.
func (f *fakeDocker) pull() {
	f.mu.Lock()
	defer f.mu.Unlock()
	byID := map[string]*fakeContainer{}
	for _, c := range f.containers {
		byID[c.id] = c
	}
	live := map[string]bool{}
	for _, dc := range f.d.Containers() {
		live[dc.ID] = true
		c := byID[dc.ID]
		if c == nil {
			f.nextID++
			c = &fakeContainer{id: dc.ID}
			f.containers[fmt.Sprintf("id%04d", f.nextID)] = c
		}
		c.name, c.cfg, c.hc, c.status, c.exit = dc.Name, dc.Config, dc.HostConfig, dc.Status, dc.ExitCode
		c.network, c.started = string(dc.HostConfig.NetworkMode), c.started || dc.Status != "created"
		c.copies = nil
		for _, cp := range dc.Copies {
			c.copies = append(c.copies, fmt.Sprintf("%s%s %d:%d copyuid=%v", cp.Dst, cp.Name, cp.UID, cp.GID, cp.CopyUIDGID))
		}
	}
	for key, c := range f.containers {
		if !live[c.id] {
			delete(f.containers, key)
		}
	}
	f.execs = nil
	for _, e := range f.d.Execs() {
		f.execs = append(f.execs, append([]string{"user=" + e.Options.User}, e.Options.Cmd...))
	}
}

// call runs one client call between push and pull.
func call[T any](f *fakeDocker, fn func() (T, error)) (T, error) {
	f.push()
	defer f.pull()
	return fn()
}

func (f *fakeDocker) ContainerCreate(ctx context.Context, cfg *container.Config, hc *container.HostConfig, nc *network.NetworkingConfig, p *ocispec.Platform, name string) (container.CreateResponse, error) {
	return call(f, func() (container.CreateResponse, error) { return f.d.ContainerCreate(ctx, cfg, hc, nc, p, name) })
}

func (f *fakeDocker) ContainerStart(ctx context.Context, id string, o container.StartOptions) error {
	_, err := call(f, func() (any, error) { return nil, f.d.ContainerStart(ctx, id, o) })
	return err
}

func (f *fakeDocker) ContainerStop(ctx context.Context, id string, o container.StopOptions) error {
	_, err := call(f, func() (any, error) { return nil, f.d.ContainerStop(ctx, id, o) })
	return err
}

func (f *fakeDocker) ContainerRestart(ctx context.Context, id string, o container.StopOptions) error {
	_, err := call(f, func() (any, error) { return nil, f.d.ContainerRestart(ctx, id, o) })
	return err
}

func (f *fakeDocker) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	return call(f, func() (container.InspectResponse, error) { return f.d.ContainerInspect(ctx, id) })
}

func (f *fakeDocker) ContainerRemove(ctx context.Context, id string, o container.RemoveOptions) error {
	_, err := call(f, func() (any, error) { return nil, f.d.ContainerRemove(ctx, id, o) })
	return err
}

func (f *fakeDocker) ContainerLogs(ctx context.Context, id string, o container.LogsOptions) (io.ReadCloser, error) {
	return call(f, func() (io.ReadCloser, error) { return f.d.ContainerLogs(ctx, id, o) })
}

func (f *fakeDocker) ContainerExecCreate(ctx context.Context, id string, o container.ExecOptions) (container.ExecCreateResponse, error) {
	return call(f, func() (container.ExecCreateResponse, error) { return f.d.ContainerExecCreate(ctx, id, o) })
}

func (f *fakeDocker) ContainerExecStart(ctx context.Context, id string, o container.ExecStartOptions) error {
	_, err := call(f, func() (any, error) { return nil, f.d.ContainerExecStart(ctx, id, o) })
	return err
}

func (f *fakeDocker) ContainerExecInspect(ctx context.Context, id string) (container.ExecInspect, error) {
	return call(f, func() (container.ExecInspect, error) { return f.d.ContainerExecInspect(ctx, id) })
}

func (f *fakeDocker) CopyToContainer(ctx context.Context, id, dst string, content io.Reader, o container.CopyToContainerOptions) error {
	_, err := call(f, func() (any, error) { return nil, f.d.CopyToContainer(ctx, id, dst, content, o) })
	return err
}

func (f *fakeDocker) ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error) {
	return call(f, func() (image.InspectResponse, error) { return f.d.ImageInspect(ctx, ref, opts...) })
}

type logFrame struct {
	stream stdcopy.StdType
	data   string
}

// demux splits stdcopy-framed bytes into their frames.
func demux(b []byte) []logFrame {
	var out []logFrame
	for len(b) >= 8 {
		n := int(binary.BigEndian.Uint32(b[4:8]))
		if len(b) < 8+n {
			break
		}
		out = append(out, logFrame{stdcopy.StdType(b[0]), string(b[8 : 8+n])})
		b = b[8+n:]
	}
	return out
}

// multiplexed frames stdout and stderr the way Docker does for non-TTY logs.
func multiplexed(stdout, stderr string) []byte {
	var buf bytes.Buffer
	_, _ = stdcopy.NewStdWriter(&buf, stdcopy.Stdout).Write([]byte(stdout))
	_, _ = stdcopy.NewStdWriter(&buf, stdcopy.Stderr).Write([]byte(stderr))
	return buf.Bytes()
}
