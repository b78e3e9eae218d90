// Package appliance wires clauderond together and owns its lifecycle:
// start-up in a fixed order (state dir, CA, credentials, audit, bridge,
// listeners, nftables, Docker event watcher, metrics, daemon API), SIGHUP
// reload, drift detection and re-apply, and a draining stop that leaves the
// network and the rules in place so traffic fails closed.
//
// It holds the small adapters that join the parts: injector → tlsmitm.Injector,
// identity → tlsmitm.Identity and dnsredir.Identity, tlsmitm and dnsredir
// events → audit records, config → routers, DNS policy, upstreams and the
// netfilter Spec. It is the only package that knows all the parts.
//
// What it refuses to do: it never tears down the rules or the network on a
// normal stop (only Teardown does, on purpose), never logs a credential value,
// never serves metrics or the API on the bridge, and never adopts a Docker
// network whose settings differ from the configuration.
package appliance
