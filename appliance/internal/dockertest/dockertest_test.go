package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/google/go-cmp/cmp"

	"github.com/clauderon/clauderond/appliance/internal/testutil"
	"go.uber.org/goleak"
)

const testImage = "agent:1"

// newDocker has testImage and a network "net" on 10.9.0.0/24.
func newDocker(t *testing.T) *Docker {
	t.Helper()
	d := New()
	d.AddImage(testImage)
	if _, err := d.NetworkCreate(context.Background(), "net", network.CreateOptions{
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.9.0.0/24"}}}}); err != nil {
		t.Fatal(err)
	}
	return d
}

func create(t *testing.T, d *Docker, name string) string {
	t.Helper()
	c, err := d.ContainerCreate(context.Background(), &container.Config{Image: testImage, Labels: map[string]string{"k": "v"}},
		&container.HostConfig{NetworkMode: "net"}, nil, nil, name)
	if err != nil {
		t.Fatalf("ContainerCreate(%s): %v", name, err)
	}
	return c.ID
}

func run(t *testing.T, d *Docker, name string) string {
	t.Helper()
	id := create(t, d, name)
	if err := d.ContainerStart(context.Background(), id, container.StartOptions{}); err != nil {
		t.Fatalf("ContainerStart(%s): %v", name, err)
	}
	return id
}

func TestConflicts_AsDockerd(t *testing.T) {
	ctx := context.Background()
	d := newDocker(t)
	id := run(t, d, "ca")
	tests := []struct {
		name string
		err  error
		is   func(error) bool
	}{
		{"container_name_taken", func() error {
			_, err := d.ContainerCreate(ctx, &container.Config{Image: testImage}, nil, nil, nil, "ca")
			return err
		}(), cerrdefs.IsConflict},
		{"network_name_taken", func() error { _, err := d.NetworkCreate(ctx, "net", network.CreateOptions{}); return err }(), cerrdefs.IsConflict},
		{"subnet_overlaps", func() error {
			_, err := d.NetworkCreate(ctx, "other", network.CreateOptions{IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.9.0.128/25"}}}})
			return err
		}(), cerrdefs.IsPermissionDenied},
		{"remove_running_without_force", d.ContainerRemove(ctx, id, container.RemoveOptions{}), cerrdefs.IsConflict},
		{"remove_network_with_endpoint", d.NetworkRemove(ctx, "net"), cerrdefs.IsPermissionDenied},
		{"remove_default_bridge", d.NetworkRemove(ctx, "bridge"), cerrdefs.IsPermissionDenied},
		{"remove_image_in_use", func() error { _, err := d.ImageRemove(ctx, testImage, image.RemoveOptions{}); return err }(), cerrdefs.IsConflict},
		{"exec_in_created_container", func() error {
			_, err := d.ContainerExecCreate(ctx, create(t, d, "idle"), container.ExecOptions{Cmd: []string{"true"}})
			return err
		}(), cerrdefs.IsConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.is(tt.err) {
				t.Errorf("err = %v, want the dockerd error class", tt.err)
			}
		})
	}
}

func TestNotFound_WrapsErrNotFound(t *testing.T) {
	ctx := context.Background()
	d := newDocker(t)
	_, inspectErr := d.ContainerInspect(ctx, "nope")
	_, logsErr := d.ContainerLogs(ctx, "nope", container.LogsOptions{ShowStdout: true})
	_, execErr := d.ContainerExecCreate(ctx, "nope", container.ExecOptions{Cmd: []string{"x"}})
	_, execInspErr := d.ContainerExecInspect(ctx, "nope")
	_, netErr := d.NetworkInspect(ctx, "nope", network.InspectOptions{})
	_, imgErr := d.ImageInspect(ctx, "nope:1")
	_, imgRmErr := d.ImageRemove(ctx, "nope:1", image.RemoveOptions{})
	_, noImage := d.ContainerCreate(ctx, &container.Config{Image: "missing:1"}, nil, nil, nil, "cx")
	_, noNet := d.ContainerCreate(ctx, &container.Config{Image: testImage}, &container.HostConfig{NetworkMode: "missing"}, nil, nil, "cy")
	_, waitErrs := d.ContainerWait(ctx, "nope", "")
	for name, err := range map[string]error{
		"ContainerInspect": inspectErr, "ContainerStart": d.ContainerStart(ctx, "nope", container.StartOptions{}),
		"ContainerStop": d.ContainerStop(ctx, "nope", container.StopOptions{}), "ContainerRemove": d.ContainerRemove(ctx, "nope", container.RemoveOptions{}),
		"ContainerLogs": logsErr, "ContainerExecCreate": execErr, "ContainerExecStart": d.ContainerExecStart(ctx, "nope", container.ExecStartOptions{}),
		"ContainerExecInspect": execInspErr, "CopyToContainer": d.CopyToContainer(ctx, "nope", "/", tarOf(t, "f", "x"), container.CopyToContainerOptions{}),
		"ContainerWait": <-waitErrs, "NetworkInspect": netErr, "NetworkRemove": d.NetworkRemove(ctx, "nope"),
		"ImageInspect": imgErr, "ImageRemove": imgRmErr, "create_without_image": noImage, "create_without_network": noNet,
	} {
		if !cerrdefs.IsNotFound(err) {
			t.Errorf("%s = %v, want not found", name, err)
		}
	}
}

// action names one event as "type action".
func action(m events.Message) string { return string(m.Type) + " " + string(m.Action) }

func collect(t *testing.T, msgs <-chan events.Message, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		select {
		case m := <-msgs:
			got = append(got, action(m))
		case <-time.After(5 * time.Second):
			t.Errorf("got %d events %v, want %d", len(got), got, n) // callable from any goroutine
			return got
		}
	}
	return got
}

var lifecycle = []string{
	"container create", "network connect", "container start",
	"container kill", "container die", "network disconnect", "container stop",
	"container destroy",
}

func TestEvents_DockerdOrder(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newDocker(t)
	msgs, _ := d.Events(ctx, events.ListOptions{})
	id := run(t, d, "ca")
	if err := d.ContainerStop(ctx, id, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.ContainerRemove(ctx, id, container.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(lifecycle, collect(t, msgs, len(lifecycle))); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	var hist []string
	for _, m := range d.History()[1:] { // after the network's create
		hist = append(hist, action(m))
	}
	if diff := cmp.Diff(lifecycle, hist); diff != "" {
		t.Errorf("History (-want +got):\n%s", diff)
	}
}

func TestEvents_TypeFilter(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newDocker(t)
	msgs, _ := d.Events(ctx, events.ListOptions{Filters: filters.NewArgs(filters.Arg("type", "network"))})
	run(t, d, "ca")
	if diff := cmp.Diff([]string{"network connect"}, collect(t, msgs, 1)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestEvents_ConcurrentSubscribersSeeEverythingInOrder(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newDocker(t)
	const subs, containers = 8, 5
	want := len(lifecycle) * containers
	got := make([][]string, subs)
	var wg sync.WaitGroup
	for i := range subs {
		msgs, _ := d.Events(ctx, events.ListOptions{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = collect(t, msgs, want)
		}()
	}
	var lwg sync.WaitGroup
	for i := range containers {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			id := run(t, d, fmt.Sprintf("c%d", i))
			_ = d.ContainerStop(ctx, id, container.StopOptions{})
			_ = d.ContainerRemove(ctx, id, container.RemoveOptions{})
		}()
	}
	lwg.Wait()
	wg.Wait()
	var hist []string
	for _, m := range d.History()[1:] {
		hist = append(hist, action(m))
	}
	for i := range subs {
		if diff := cmp.Diff(hist, got[i]); diff != "" {
			t.Errorf("subscriber %d differs from History (-history +got):\n%s", i, diff)
		}
	}
}

func TestEvents_NoGoroutineLeakWhenContextEnds(t *testing.T) {
	before := goleak.IgnoreCurrent()
	d := newDocker(t)
	ctx, cancel := context.WithCancel(context.Background())
	var errChans []<-chan error
	for range 10 {
		_, errs := d.Events(ctx, events.ListOptions{}) // nobody reads the messages
		errChans = append(errChans, errs)
	}
	run(t, d, "ca") // queued for readers that never come
	if n := d.Subscribers(); n != 10 {
		t.Fatalf("Subscribers = %d, want 10", n)
	}
	cancel()
	for _, errs := range errChans {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Errorf("stream error = %v, want context.Canceled", err)
		}
		if _, open := <-errs; open {
			t.Error("error channel not closed after the stream ended")
		}
	}
	testutil.WaitFor(t, "every subscriber gone", func() bool { return d.Subscribers() == 0 })
	testutil.NoLeaks(t, before)
}

func TestSubscriber_SendThenFail(t *testing.T) {
	d := New()
	var sub *Subscriber
	d.OnSubscribe(func(_ context.Context, s *Subscriber) { sub = s })
	msgs, errs := d.Events(context.Background(), events.ListOptions{})
	sub.Send(events.Message{Type: events.ContainerEventType, Action: events.ActionDie})
	sub.Fail(io.ErrUnexpectedEOF)
	if got := action(<-msgs); got != "container die" {
		t.Errorf("first message = %q, want the scripted die", got)
	}
	if err := <-errs; !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("stream error = %v, want unexpected EOF", err)
	}
	<-sub.Done()
	if d.Calls("Events") != 1 || d.Subscribers() != 0 {
		t.Errorf("calls %d, live %d; want 1, 0", d.Calls("Events"), d.Subscribers())
	}
}

func TestState_StartStopAddressesAndLabels(t *testing.T) {
	ctx := context.Background()
	d := newDocker(t)
	id := run(t, d, "ca")
	if err := d.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		t.Errorf("starting a running container = %v, want nil (dockerd's 304)", err)
	}
	in, err := d.ContainerInspect(ctx, "ca")
	if err != nil {
		t.Fatal(err)
	}
	ep := in.NetworkSettings.Networks["net"]
	if !in.State.Running || in.State.Pid == 0 || in.Config.Labels["k"] != "v" || ep.IPAddress != "10.9.0.2" || ep.Gateway != "10.9.0.1" {
		t.Errorf("inspect: running %v pid %d labels %v ip %s gw %s", in.State.Running, in.State.Pid, in.Config.Labels, ep.IPAddress, ep.Gateway)
	}
	n, _ := d.NetworkInspect(ctx, "net", network.InspectOptions{})
	if n.Containers[id].IPv4Address != "10.9.0.2/24" {
		t.Errorf("network endpoints = %v", n.Containers)
	}
	if err := d.ContainerStop(ctx, id, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	in, _ = d.ContainerInspect(ctx, id)
	if in.State.Status != "exited" || in.State.ExitCode != 143 || in.NetworkSettings.Networks["net"].IPAddress != "" {
		t.Errorf("after stop: %+v, address %q", in.State, in.NetworkSettings.Networks["net"].IPAddress)
	}
	if _, err := d.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: []string{"true"}}); !cerrdefs.IsConflict(err) {
		t.Errorf("exec in a stopped container = %v, want conflict", err)
	}
	if err := d.NetworkRemove(ctx, "net"); err != nil {
		t.Errorf("NetworkRemove with only a stopped container attached = %v, want nil (no active endpoint)", err)
	}
}

func TestState_StaticAddressInUse(t *testing.T) {
	ctx := context.Background()
	d := newDocker(t)
	nc := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{"net": {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: "10.9.0.7"}}}}
	for i, want := range []func(error) bool{func(err error) bool { return err == nil }, cerrdefs.IsConflict} {
		c, err := d.ContainerCreate(ctx, &container.Config{Image: testImage}, &container.HostConfig{NetworkMode: "net"}, nc, nil, fmt.Sprint("s", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.ContainerStart(ctx, c.ID, container.StartOptions{}); !want(err) {
			t.Errorf("start %d with 10.9.0.7 = %v", i, err)
		}
	}
}

func TestExecCopyImages(t *testing.T) {
	ctx := context.Background()
	d := newDocker(t)
	id := create(t, d, "ca")
	if err := d.CopyToContainer(ctx, id, "/", tarOf(t, "etc/x", "data"), container.CopyToContainerOptions{CopyUIDGID: true}); err != nil {
		t.Fatal(err)
	}
	c, _ := d.Container("ca")
	if len(c.Copies) != 1 || c.Copies[0].Name != "etc/x" || string(c.Copies[0].Data) != "data" || !c.Copies[0].CopyUIDGID {
		t.Errorf("copies = %+v", c.Copies)
	}
	if err := d.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	ex, err := d.ContainerExecCreate(ctx, id, container.ExecOptions{User: "1000", Cmd: []string{"id"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.ContainerExecStart(ctx, ex.ID, container.ExecStartOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.ContainerExecStart(ctx, ex.ID, container.ExecStartOptions{}); !cerrdefs.IsConflict(err) {
		t.Errorf("second exec start = %v, want conflict", err)
	}
	if in, err := d.ContainerExecInspect(ctx, ex.ID); err != nil || in.Running || in.ContainerID != id {
		t.Errorf("exec inspect = %+v, %v", in, err)
	}
	if _, err := d.ImageImport(ctx, image.ImportSource{Source: strings.NewReader("")}, "empty:1", image.ImportOptions{}); !cerrdefs.IsInvalidArgument(err) {
		t.Errorf("empty import = %v, want invalid", err)
	}
	if _, err := d.ImageImport(ctx, image.ImportSource{Source: tarOf(t, "bin", "x")}, "probe:2", image.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	list, _ := d.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", "probe:*"))})
	if len(list) != 1 || list[0].RepoTags[0] != "probe:2" {
		t.Errorf("ImageList(probe:*) = %+v", list)
	}
	if _, err := d.ImageRemove(ctx, "probe:2", image.RemoveOptions{}); err != nil || d.HasImage("probe:2") {
		t.Errorf("ImageRemove = %v, still there %v", err, d.HasImage("probe:2"))
	}
}

func TestKnobs_FailBeforeProgram(t *testing.T) {
	ctx := context.Background()
	d := newDocker(t)
	down := errors.New("cannot connect to the Docker daemon")
	d.Fail("NetworkInspect", down)
	if _, err := d.NetworkInspect(ctx, "net", network.InspectOptions{}); !errors.Is(err, down) {
		t.Errorf("NetworkInspect = %v, want the injected error", err)
	}
	d.Fail("NetworkInspect", nil)
	if _, err := d.NetworkInspect(ctx, "net", network.InspectOptions{}); err != nil || d.Calls("NetworkInspect") != 2 {
		t.Errorf("NetworkInspect after clearing = %v, calls %d", err, d.Calls("NetworkInspect"))
	}
	defer func() {
		if recover() == nil {
			t.Error("Before on an unknown method did not panic")
		}
	}()
	d.SetProgram(func(_ context.Context, c Container, stdout, stderr io.Writer) (int, error) {
		fmt.Fprintf(stdout, "hello from %s\n", c.Name)
		fmt.Fprint(stderr, "warn\n")
		return 3, nil
	})
	id := create(t, d, "cp")
	waitC, errC := d.ContainerWait(ctx, id, container.WaitConditionNextExit)
	if err := d.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-waitC:
		if w.StatusCode != 3 {
			t.Errorf("exit = %d, want 3", w.StatusCode)
		}
	case err := <-errC:
		t.Fatal(err)
	}
	rc, _ := d.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, rc); err != nil || out.String() != "hello from cp\n" || errOut.String() != "warn\n" {
		t.Errorf("logs: %q %q %v", out.String(), errOut.String(), err)
	}
	d.Before("ContainerStrat", nil)
}

func tarOf(t *testing.T, name, data string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write([]byte(data))
	_ = tw.Close()
	return &buf
}
