package appliance

import (
	"net/netip"

	"github.com/clauderon/clauderond/appliance/kubepods"
	"time"

	"github.com/clauderon/clauderond/appliance/bridge"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/netfilter"
)

// DockerClient is the Docker API the appliance uses (bridge and identity).
// *client.Client satisfies it.
type DockerClient interface {
	bridge.DockerAPI
	identity.DockerAPI
}

// Option adjusts Run and Teardown; the defaults are the real system.
type Option func(*options)

type options struct {
	docker         DockerClient
	nft            netfilter.Manager
	table          string
	load           func() (*config.Config, error)
	reloads        <-chan struct{}
	veth           identity.VethResolver
	verifyInterval time.Duration
	gatewayWait    func(bridgeName string, gw string) error
	onReady        func()
	version        string
	listenAddr     string
	doctorExe      string // static clauderond for the doctor's probe image ("" → /proc/self/exe)
	kubeClient     *kubepods.Client
	podVeth        func(ip netip.Addr, podUID string) (string, error)
}

// WithKubernetes uses c to reach the API server in node mode and veth to
// find a pod's host-side veth (tests; nil keeps the default).
func WithKubernetes(c *kubepods.Client, veth func(ip netip.Addr, podUID string) (string, error)) Option {
	return func(o *options) { o.kubeClient, o.podVeth = c, veth }
}

// WithDocker uses d instead of a client from the environment.
func WithDocker(d DockerClient) Option { return func(o *options) { o.docker = d } }

// WithNetfilter uses m instead of the kernel (tests pass a *netfilter.Fake).
func WithNetfilter(m netfilter.Manager) Option { return func(o *options) { o.nft = m } }

// WithTable names our nftables tables (tests use their own; default "clauderon").
func WithTable(name string) Option { return func(o *options) { o.table = name } }

// WithReload makes every receive on trigger (SIGHUP) and every API reload
// re-read the configuration through load. Without it a reload re-reads
// only the credentials.
func WithReload(load func() (*config.Config, error), trigger <-chan struct{}) Option {
	return func(o *options) { o.load, o.reloads = load, trigger }
}

// WithVerifyInterval sets how often the ruleset is verified (default 10s).
func WithVerifyInterval(d time.Duration) Option { return func(o *options) { o.verifyInterval = d } }

// WithOnReady is called once the daemon is ready.
func WithOnReady(f func()) Option { return func(o *options) { o.onReady = f } }

// WithVersion sets the version reported in status.
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

// withVeth and withGatewayWait are test seams for runs without a kernel bridge.
func withVeth(v identity.VethResolver) Option { return func(o *options) { o.veth = v } }

func withGatewayWait(f func(bridgeName, gw string) error) Option {
	return func(o *options) { o.gatewayWait = f }
}

// withListenAddr binds the listeners somewhere other than the gateway
// (unit tests without a bridge bind loopback).
func withListenAddr(a string) Option { return func(o *options) { o.listenAddr = a } }

// withDoctorExe points the doctor's probe image at a built clauderond (tests
// run inside a test binary, which cannot serve as the probe).
func withDoctorExe(p string) Option { return func(o *options) { o.doctorExe = p } }
