package appliance

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"golang.org/x/sync/errgroup"
)

// stepAPI serves the daemon API on the Unix socket (mode 0660, group
// socket.group). A stale socket from a killed daemon is replaced; a live one
// means another daemon runs, and start-up stops.
func (d *daemon) stepAPI(ctx context.Context, g *errgroup.Group) error {
	path := d.cfg.SocketPath()
	if err := ensureSocketDir(filepath.Dir(path), d.cfg.Socket.Group != ""); err != nil {
		return err
	}
	ln, err := listenUnix(ctx, path)
	if err != nil {
		return err
	}
	if err := chownSocket(path, d.cfg.Socket.Group); err != nil {
		ln.Close()
		return err
	}
	d.listeners = append(d.listeners, listenerStatus{"api", path, true})
	b := &backend{d: d}
	d.wireSessions(ctx, b)
	srv := &http.Server{Handler: api.NewHandler(b, d.base), ReadHeaderTimeout: 10 * time.Second, ConnContext: withPeerCred}
	serveSocket(ctx, g, srv, ln, path, "daemon API")
	return nil
}

// serveSocket serves srv on the Unix socket ln (at path) in g until ctx
// ends, then removes the socket.
func serveSocket(ctx context.Context, g *errgroup.Group, srv *http.Server, ln net.Listener, path, what string) {
	g.Go(func() error {
		defer os.Remove(path)
		if err := serveHTTP(ctx, srv, ln); err != nil {
			return fmt.Errorf("%s on %s: %w", what, path, err)
		}
		return nil
	})
}

// ensureSocketDir creates the socket's directory when it is missing (e.g.
// /run/clauderon on a host where systemd's RuntimeDirectory= did not make
// it): 0755 when a group is to reach the socket through it, else 0700. An
// existing directory is left as it is.
func ensureSocketDir(dir string, forGroup bool) error {
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	mode := os.FileMode(0o700)
	if forGroup {
		mode = 0o755
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("creating the socket directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil { // the umask may have narrowed it
		return fmt.Errorf("chmod %o %s: %w", mode, dir, err)
	}
	return nil
}

func listenUnix(ctx context.Context, path string) (net.Listener, error) {
	if _, err := os.Stat(path); err == nil {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "unix", path)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another clauderond is serving %s; stop it first", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("checking socket %s: %w", path, err)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on socket %s (socket.path): %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod 0660 %s: %w", path, err)
	}
	return ln, nil
}

// chownSocket gives the socket to group (name or gid); "" keeps the daemon's.
func chownSocket(path, group string) error {
	if group == "" {
		return nil
	}
	gid, err := strconv.Atoi(group)
	if err != nil {
		g, lerr := user.LookupGroup(group)
		if lerr != nil {
			return fmt.Errorf("socket.group %q: %w; create it (groupadd %s) or unset socket.group", group, lerr, group)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("chown socket %s to group %s: %w", path, group, err)
	}
	return nil
}

// withPeerCred records the kernel's credentials of the process on the other
// end of a socket connection (SO_PEERCRED) in the request context, so the
// backend knows who asks (api.PeerFrom) without trusting the client. When
// the kernel cannot say, the caller is nobody (fail closed: a request
// without a peer would count as in-process, i.e. as an administrator).
func withPeerCred(ctx context.Context, c net.Conn) context.Context {
	p, err := api.PeerOf(c)
	if err != nil {
		p = api.Peer{UID: nobodyID, GID: nobodyID}
	}
	return api.WithPeer(ctx, p)
}

// nobodyID is the uid and gid of a socket peer the kernel could not name.
const nobodyID = 65534
