package session

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeDocker is an in-memory Docker that cross-checks call order: start
// before create, exec on a stopped container, copy after start all fail.
type fakeDocker struct {
	mu         sync.Mutex
	images     map[string][]string // image → env
	containers map[string]*fakeContainer
	execs      [][]string
	nextID     int
	failStart  error
	logs       []byte // raw log bytes (already multiplexed when not TTY)
}

type fakeContainer struct {
	id      string
	name    string
	cfg     *container.Config
	hc      *container.HostConfig
	network string
	started bool
	copies  []string // paths extracted before start, "path uid:gid"
	exit    int
	status  string
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{images: map[string][]string{"clauderon-agent:latest": nil, "img-with-home:1": {"PATH=/bin", "HOME=/home/node"}},
		containers: map[string]*fakeContainer{}}
}

var _ DockerAPI = (*fakeDocker)(nil)

func (f *fakeDocker) find(idOrName string) (*fakeContainer, error) {
	for _, c := range f.containers {
		if c.id == idOrName || c.name == idOrName {
			return c, nil
		}
	}
	return nil, errdefs.NotFound(fmt.Errorf("no such container: %s", idOrName))
}

func (f *fakeDocker) ContainerCreate(ctx context.Context, cfg *container.Config, hc *container.HostConfig, nc *network.NetworkingConfig, p *ocispec.Platform, name string) (container.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.images[cfg.Image]; !ok {
		return container.CreateResponse{}, errdefs.NotFound(fmt.Errorf("no such image: %s", cfg.Image))
	}
	if _, err := f.find(name); err == nil {
		return container.CreateResponse{}, errdefs.Conflict(fmt.Errorf("name %s in use", name))
	}
	f.nextID++
	id := fmt.Sprintf("id%04d", f.nextID)
	f.containers[id] = &fakeContainer{id: id, name: name, cfg: cfg, hc: hc, network: string(hc.NetworkMode), status: "created"}
	return container.CreateResponse{ID: id}, nil
}

func (f *fakeDocker) ContainerStart(ctx context.Context, id string, o container.StartOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	if f.failStart != nil {
		return f.failStart
	}
	if c.status == "running" {
		return fmt.Errorf("fake: container %s started while running", id)
	}
	c.started, c.status = true, "running"
	return nil
}

func (f *fakeDocker) ContainerStop(ctx context.Context, id string, o container.StopOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	if c.status == "running" {
		c.status, c.exit = "exited", 143
	}
	return nil
}

func (f *fakeDocker) ContainerRestart(ctx context.Context, id string, o container.StopOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	c.started, c.status, c.exit = true, "running", 0
	return nil
}

func (f *fakeDocker) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return container.InspectResponse{}, err
	}
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: c.id, Name: "/" + c.name, State: &container.State{Status: c.status, ExitCode: c.exit}},
		Config:            c.cfg,
	}, nil
}

func (f *fakeDocker) ContainerRemove(ctx context.Context, id string, o container.RemoveOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	if c.started && c.status == "running" && !o.Force {
		return errdefs.Conflict(fmt.Errorf("container %s is running", id))
	}
	delete(f.containers, c.id)
	return nil
}

func (f *fakeDocker) ContainerLogs(ctx context.Context, id string, o container.LogsOptions) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.find(id); err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(f.logs)), nil
}

func (f *fakeDocker) ContainerExecCreate(ctx context.Context, id string, o container.ExecOptions) (container.ExecCreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return container.ExecCreateResponse{}, err
	}
	if !c.started {
		return container.ExecCreateResponse{}, errdefs.Conflict(fmt.Errorf("container %s is not running", id))
	}
	f.execs = append(f.execs, append([]string{"user=" + o.User}, o.Cmd...))
	return container.ExecCreateResponse{ID: fmt.Sprintf("exec%d", len(f.execs))}, nil
}

func (f *fakeDocker) ContainerExecStart(ctx context.Context, id string, o container.ExecStartOptions) error {
	return nil
}

func (f *fakeDocker) ContainerExecInspect(ctx context.Context, id string) (container.ExecInspect, error) {
	return container.ExecInspect{ExecID: id, Running: false, ExitCode: 0}, nil
}

func (f *fakeDocker) CopyToContainer(ctx context.Context, id, dst string, content io.Reader, o container.CopyToContainerOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	if c.started {
		return fmt.Errorf("fake: copy after start races the agent")
	}
	tr := tar.NewReader(content)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		c.copies = append(c.copies, fmt.Sprintf("%s%s %d:%d copyuid=%v", dst, h.Name, h.Uid, h.Gid, o.CopyUIDGID))
	}
}

func (f *fakeDocker) ImageInspect(ctx context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	env, ok := f.images[ref]
	if !ok {
		return image.InspectResponse{}, errdefs.NotFound(fmt.Errorf("no such image: %s", ref))
	}
	return image.InspectResponse{ID: "sha256:" + ref, Config: &dockerspec.DockerOCIImageConfig{ImageConfig: ocispec.ImageConfig{Env: env}}}, nil
}

// multiplexed frames stdout and stderr the way Docker does for non-TTY logs.
func multiplexed(stdout, stderr string) []byte {
	var buf bytes.Buffer
	_, _ = stdcopy.NewStdWriter(&buf, stdcopy.Stdout).Write([]byte(stdout))
	_, _ = stdcopy.NewStdWriter(&buf, stdcopy.Stderr).Write([]byte(stderr))
	return buf.Bytes()
}
