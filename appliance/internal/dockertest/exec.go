package dockertest

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"slices"

	"github.com/docker/docker/api/types/container"
)

// Exec is one exec instance. The fake runs nothing: ExecStart finishes it
// at once with ExitCode 0 (a Before hook on ContainerExecStart can fail it).
type Exec struct {
	ID          string
	ContainerID string
	Options     container.ExecOptions
	Started     bool
	ExitCode    int
}

// Copy is one entry of an archive CopyToContainer extracted.
type Copy struct {
	Dst        string // the dstPath argument
	Name       string // the tar entry's name
	UID, GID   int
	Mode       int64
	CopyUIDGID bool
	Data       []byte // regular files' contents
}

// Execs returns every exec created, oldest first.
func (d *Docker) Execs() []Exec {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Exec, 0, len(d.execOrder))
	for _, id := range d.execOrder {
		e := *d.execs[id]
		e.Options.Cmd = slices.Clone(e.Options.Cmd)
		out = append(out, e)
	}
	return out
}

// ContainerExecCreate needs a running container, as dockerd does.
func (d *Docker) ContainerExecCreate(ctx context.Context, ref string, o container.ExecOptions) (container.ExecCreateResponse, error) {
	var id string
	err := d.onContainer(ctx, "ContainerExecCreate", ref, func(c *Container) error {
		if !c.running() {
			return conflict("container %s is not running", c.ID)
		}
		if len(o.Cmd) == 0 {
			return invalid("No exec command specified")
		}
		id = d.newID("exec")
		o.Cmd = slices.Clone(o.Cmd)
		d.execs[id] = &Exec{ID: id, ContainerID: c.ID, Options: o}
		d.execOrder = append(d.execOrder, id)
		return nil
	})
	return container.ExecCreateResponse{ID: id}, err
}

// ContainerExecStart runs the exec to completion (exit code 0); its
// container must still run, and an exec starts once.
func (d *Docker) ContainerExecStart(ctx context.Context, execID string, _ container.ExecStartOptions) error {
	if err := d.begin(ctx, "ContainerExecStart", execID); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.execs[execID]
	if !ok {
		return notFound("No such exec instance: %s", execID)
	}
	if c, ok := d.containers[e.ContainerID]; !ok || !c.running() {
		return conflict("container %s is not running", e.ContainerID)
	}
	if e.Started {
		return conflict("Error: Exec command %s is already running", execID)
	}
	e.Started = true
	return nil
}

// ContainerExecInspect reports the exec (never running: the fake's execs
// finish as they start).
func (d *Docker) ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error) {
	if err := d.begin(ctx, "ContainerExecInspect", execID); err != nil {
		return container.ExecInspect{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.execs[execID]
	if !ok {
		return container.ExecInspect{}, notFound("No such exec instance: %s", execID)
	}
	return container.ExecInspect{ExecID: e.ID, ContainerID: e.ContainerID, ExitCode: e.ExitCode}, nil
}

// CopyToContainer records the tar archive's entries on the container
// (created or running, as dockerd allows); a broken archive is refused.
func (d *Docker) CopyToContainer(ctx context.Context, ref, dst string, content io.Reader, o container.CopyToContainerOptions) error {
	copies, err := readArchive(content, dst, o.CopyUIDGID)
	if err != nil {
		return err
	}
	return d.onContainer(ctx, "CopyToContainer", ref, func(c *Container) error {
		c.Copies = append(c.Copies, copies...)
		return nil
	})
}

func readArchive(r io.Reader, dst string, copyUIDGID bool) ([]Copy, error) {
	var out []Copy
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, invalid("extracting archive to %s: %v", dst, err)
		}
		cp := Copy{Dst: dst, Name: h.Name, UID: h.Uid, GID: h.Gid, Mode: h.Mode, CopyUIDGID: copyUIDGID}
		if h.Typeflag == tar.TypeReg {
			if cp.Data, err = io.ReadAll(tr); err != nil {
				return nil, invalid("extracting archive to %s: %v", dst, err)
			}
		}
		out = append(out, cp)
	}
}
