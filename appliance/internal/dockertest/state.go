package dockertest

import (
	"context"
	"io"
	"slices"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
)

// Program is what a started container runs: it may write output, and the
// container exits with its code as soon as it returns (die event). An
// error fails ContainerStart, as a runtime error would (exit code 128).
type Program func(ctx context.Context, c Container, stdout, stderr io.Writer) (exitCode int, err error)

// SetProgram makes every later start run p (nil: containers run until
// stopped, removed with force, or Exit).
func (d *Docker) SetProgram(p Program) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.program = p
}

// Put installs c as if it had been created (and, unless its Status says
// "created" or "exited", started) without the fake seeing it: no checks
// against images or networks, no events. A missing ID is generated, a
// missing Status is "running". It panics when the name is taken.
func (d *Docker) Put(c Container) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.ID == "" {
		c.ID = d.newID("container")
	}
	if other, err := d.find(c.Name); err == nil && other.ID != c.ID {
		panic("dockertest: Put: name " + c.Name + " is taken by " + other.ID)
	}
	if c.Status == "" {
		c.Status = "running"
	}
	if c.Config == nil {
		c.Config = &container.Config{}
	}
	if c.HostConfig == nil {
		c.HostConfig = &container.HostConfig{}
	}
	if c.Networks == nil {
		c.Networks = map[string]*network.EndpointSettings{}
	}
	if c.running() && c.Pid == 0 {
		d.seq++
		c.Pid = 1000 + d.seq
	}
	cp := c.clone()
	d.containers[c.ID] = &cp
}

// Update runs fn on the container behind the event stream (no events,
// no checks); fn must not call the fake.
func (d *Docker) Update(ref string, fn func(c *Container)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(ref)
	if err != nil {
		return err
	}
	fn(c)
	return nil
}

// Forget deletes the container behind the event stream (no events).
func (d *Docker) Forget(ref string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(ref)
	if err != nil {
		return err
	}
	delete(d.containers, c.ID)
	return nil
}

// Exit makes a running container's process exit with code, as if it ended
// on its own: die and network disconnect events, waiters released.
func (d *Docker) Exit(ref string, code int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(ref)
	if err != nil {
		return err
	}
	if !c.running() {
		return conflict("container %s is not running", ref)
	}
	d.exitLocked(c, code, "", false)
	return nil
}

// Output appends data to the container's log on stream (stdcopy.Stdout or
// stdcopy.Stderr), as if its process had written it.
func (d *Docker) Output(ref string, stream stdcopy.StdType, data string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(ref)
	if err != nil {
		return err
	}
	c.logs = append(c.logs, frame{stream, []byte(data)})
	return nil
}

// Container returns a copy of the container with that ID or name.
func (d *Docker) Container(ref string) (Container, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(ref)
	if err != nil {
		return Container{}, false
	}
	return c.clone(), true
}

// Containers returns copies of every container, oldest first.
func (d *Docker) Containers() []Container {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []Container{}
	for _, c := range d.created {
		if live, ok := d.containers[c.ID]; ok {
			out = append(out, live.clone())
		}
	}
	for _, c := range d.containers { // Put ones, which were never created
		if !slices.ContainsFunc(out, func(o Container) bool { return o.ID == c.ID }) {
			out = append(out, c.clone())
		}
	}
	return out
}

// Created returns every container ContainerCreate made, as it was made,
// removed ones included, oldest first.
func (d *Docker) Created() []Container {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.created)
}
