package dockertest

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
)

// inspect renders c as dockerd's inspect does.
func (c *Container) inspect() container.InspectResponse {
	cp := c.clone()
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: c.ID, Name: "/" + c.Name, Image: c.Config.Image,
			State:      &container.State{Status: c.Status, Running: c.running(), Pid: c.Pid, ExitCode: c.ExitCode},
			HostConfig: cp.HostConfig},
		Config:          cp.Config,
		NetworkSettings: &container.NetworkSettings{Networks: cp.Networks},
	}
}

// ContainerInspect returns the container with that ID or name.
func (d *Docker) ContainerInspect(ctx context.Context, ref string) (container.InspectResponse, error) {
	if err := d.begin(ctx, "ContainerInspect", ref); err != nil {
		return container.InspectResponse{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(ref)
	if err != nil {
		return container.InspectResponse{}, err
	}
	return c.inspect(), nil
}

// ContainerList lists running containers (all with All), newest first.
// Filters: id, name (substring), label (key or key=value), status,
// network; any other key is refused, as dockerd does.
func (d *Docker) ContainerList(ctx context.Context, o container.ListOptions) ([]container.Summary, error) {
	if err := d.begin(ctx, "ContainerList", ""); err != nil {
		return nil, err
	}
	if err := o.Filters.Validate(map[string]bool{"id": true, "name": true, "label": true, "status": true, "network": true}); err != nil {
		return nil, invalid("%v", err)
	}
	all := d.Containers()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []container.Summary
	for _, c := range slices.Backward(all) {
		if (!o.All && !c.running()) || !listed(c, o) {
			continue
		}
		s := container.Summary{ID: c.ID, Names: []string{"/" + c.Name}, Image: c.Config.Image,
			Labels: maps.Clone(c.Config.Labels), State: container.ContainerState(c.Status), Status: c.Status,
			NetworkSettings: &container.NetworkSettingsSummary{Networks: c.Networks}}
		s.HostConfig.NetworkMode = string(c.HostConfig.NetworkMode)
		out = append(out, s)
	}
	return out, nil
}

func listed(c Container, o container.ListOptions) bool {
	f := o.Filters
	if f.Len() == 0 {
		return true
	}
	if f.Contains("id") && !f.Match("id", c.ID) {
		return false
	}
	if f.Contains("name") && !slices.ContainsFunc(f.Get("name"), func(n string) bool { return strings.Contains(c.Name, strings.TrimPrefix(n, "/")) }) {
		return false
	}
	if f.Contains("label") && !f.MatchKVList("label", c.Config.Labels) {
		return false
	}
	if f.Contains("status") && !f.ExactMatch("status", c.Status) {
		return false
	}
	if f.Contains("network") && !slices.ContainsFunc(f.Get("network"), func(n string) bool {
		return c.Networks[n] != nil || slices.ContainsFunc(slices.Collect(maps.Values(c.Networks)), func(ep *network.EndpointSettings) bool { return ep.NetworkID == n })
	}) {
		return false
	}
	return true
}

type waiter struct {
	c     *Container
	cond  container.WaitCondition
	resp  chan container.WaitResponse
	fired chan struct{}
}

// ContainerWait reports the container's exit code: at once when it is
// not running ("not-running", the default), at its next exit
// ("next-exit"), or when it is removed ("removed"). A cancelled ctx is
// reported on the error channel, as by the client.
func (d *Docker) ContainerWait(ctx context.Context, ref string, cond container.WaitCondition) (<-chan container.WaitResponse, <-chan error) {
	resp, errs := make(chan container.WaitResponse, 1), make(chan error, 1)
	if err := d.begin(ctx, "ContainerWait", ref); err != nil {
		errs <- err
		return resp, errs
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(ref)
	switch {
	case err != nil:
		errs <- err
		return resp, errs
	case (cond == "" || cond == container.WaitConditionNotRunning) && !c.running():
		resp <- container.WaitResponse{StatusCode: int64(c.ExitCode)}
		return resp, errs
	case cond != "" && cond != container.WaitConditionNotRunning && cond != container.WaitConditionNextExit && cond != container.WaitConditionRemoved:
		errs <- invalid("invalid condition: %q", cond)
		return resp, errs
	}
	w := &waiter{c: c, cond: cond, resp: resp, fired: make(chan struct{})}
	c.waiters = append(c.waiters, w)
	go d.waitContainer(ctx, w, errs)
	return resp, errs
}

// waitContainer turns ctx's end into the error of a wait not yet released.
func (d *Docker) waitContainer(ctx context.Context, w *waiter, errs chan<- error) {
	select {
	case <-w.fired:
	case <-ctx.Done():
		d.mu.Lock()
		defer d.mu.Unlock()
		select {
		case <-w.fired: // released meanwhile: the response is there
		default:
			w.c.waiters = slices.DeleteFunc(w.c.waiters, func(o *waiter) bool { return o == w })
			errs <- ctx.Err()
		}
	}
}

// releaseLocked answers the waiters an exit (or, with removed, a removal)
// releases.
func (d *Docker) releaseLocked(c *Container, removed bool) {
	c.waiters = slices.DeleteFunc(c.waiters, func(w *waiter) bool {
		if !removed && w.cond == container.WaitConditionRemoved {
			return false
		}
		w.resp <- container.WaitResponse{StatusCode: int64(c.ExitCode)}
		close(w.fired)
		return true
	})
}
