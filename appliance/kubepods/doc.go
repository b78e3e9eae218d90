// Package kubepods answers "which Kubernetes pod is 10.x.y.z on this node's
// CNI bridge?" for node mode (clauderond as a DaemonSet). It is the
// Kubernetes twin of identity.Table and returns identity.Container values:
// a table of the pods scheduled to one node (uid, "<namespace>/<name>",
// labels, profile, service account, host-side veth), built from an initial
// list of the node's pods and kept current from the API server's watch
// stream. It speaks to the API server with net/http and a handful of
// structs of its own (no client-go), and finds a pod's host veth in the
// CNI plugins' results cache (CNIResults).
//
// It refuses to enforce anything itself: it never touches nftables, TLS or
// credentials, and never writes to the API server (it needs get, list and
// watch on pods, nothing else). It reports changes through a callback so
// that package appliance can keep the anti-spoofing port set in step. A pod
// on the host network, a pod that has finished (Succeeded or Failed) and a
// pod whose IPv4 address is outside the node's pod subnet are not in the
// table; an address it does not know is simply unknown, and callers fail
// closed.
//
// Lookup also fails closed where the table cannot vouch for an address:
//
//   - before the first list and while the watch is down (from a failure
//     until the relist that follows it is in the table): a new pod may hold
//     a stale entry's address. List keeps answering meanwhile; StreamDown
//     reports the state.
//   - while two pods claim the same address (a terminating pod and its
//     successor): a pod being deleted keeps its address until the API
//     server reports it DELETED or its address goes away, and the address
//     belongs to no one until a single claimant remains.
//
// What it reads from the API server and the CNI cache is bounded (one
// watch event, the pod list, each cache file); a malformed or oversized
// event ends the watch and forces a relist, never a guess.
package kubepods
