package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"

	"github.com/clauderon/clauderond/appliance/api"
	"go.yaml.in/yaml/v3"
)

// systemConfig is the installed daemon's configuration file (the same
// default clauderond reads).
const systemConfig = "/etc/clauderon/config.yaml"

// socketChoice is where the CLI looks for the daemon and why.
type socketChoice struct {
	path string
	from string // "--socket", "$CLAUDERON_SOCKET", "/etc/clauderon/config.yaml", …
}

// findSocket decides which socket to use, in this order: --socket;
// $CLAUDERON_SOCKET; the daemon's config file (--config, $CLAUDERON_CONFIG,
// else /etc/clauderon/config.yaml when it exists): socket.path, else
// state_dir/clauderond.sock; $CLAUDERON_STATE_DIR; the invoking user's
// ~/.clauderon; root's. The config file is read for these two keys only,
// with the daemon's environment overrides (CLAUDERON_SOCKET_PATH,
// CLAUDERON_STATE_DIR) applied on top, as viper does in the daemon.
// sysConfig is systemConfig outside tests.
func findSocket(flag, configFlag, sysConfig string, env map[string]string) (socketChoice, error) {
	if flag != "" {
		return socketChoice{flag, "--socket"}, nil
	}
	for _, k := range []string{"CLAUDERON_SOCKET", "CLAUDERON_SOCKET_PATH"} {
		if v := env[k]; v != "" {
			return socketChoice{v, "$" + k}, nil
		}
	}
	file, explicit := configFlag, configFlag != ""
	if file == "" && env["CLAUDERON_CONFIG"] != "" {
		file, explicit = env["CLAUDERON_CONFIG"], true
	}
	if file == "" {
		file = sysConfig
	}
	sock, err := socketFromConfig(file, env)
	switch {
	case err == nil && sock != "":
		return socketChoice{sock, file}, nil
	case err != nil && (explicit || !errors.Is(err, fs.ErrNotExist)):
		return socketChoice{}, err
	}
	if d := env["CLAUDERON_STATE_DIR"]; d != "" {
		return socketChoice{filepath.Join(d, "clauderond.sock"), "$CLAUDERON_STATE_DIR"}, nil
	}
	return socketChoice{homeSocket(env), "the default state dir (no " + sysConfig + ")"}, nil
}

// socketFromConfig reads socket.path and state_dir from the daemon's
// config file; "" when it names neither.
func socketFromConfig(file string, env map[string]string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return "", fmt.Errorf("reading %s to find the daemon's socket: %w (pass --socket PATH)", file, err)
		}
		return "", fmt.Errorf("reading %s to find the daemon's socket: %w", file, err)
	}
	var c struct {
		StateDir string `yaml:"state_dir"`
		Socket   struct {
			Path string `yaml:"path"`
		} `yaml:"socket"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return "", fmt.Errorf("reading %s to find the daemon's socket: %w", file, err)
	}
	if v := env["CLAUDERON_STATE_DIR"]; v != "" {
		c.StateDir = v
	}
	switch {
	case c.Socket.Path != "":
		return c.Socket.Path, nil
	case c.StateDir != "":
		return filepath.Join(c.StateDir, "clauderond.sock"), nil
	}
	return "", nil
}

// homeSocket mirrors the daemon's default without a config file:
// <state_dir>/clauderond.sock, state_dir being ~/.clauderon of the invoking
// user (SUDO_USER's under sudo). When that socket does not exist but
// root's does, that one.
func homeSocket(env map[string]string) string {
	home := env["HOME"]
	if su := env["SUDO_USER"]; su != "" && su != "root" {
		if u, err := user.Lookup(su); err == nil {
			home = u.HomeDir
		}
	}
	if home == "" {
		if u, err := user.Current(); err == nil {
			home = u.HomeDir
		}
	}
	mine := filepath.Join(home, ".clauderon", "clauderond.sock")
	const rootSock = "/root/.clauderon/clauderond.sock"
	if _, err := os.Stat(mine); err != nil {
		if _, err := os.Stat(rootSock); err == nil {
			return rootSock
		}
	}
	return mine
}

// checkDaemonPeer refuses a socket served by anyone but root or the CLI's
// own user (SO_PEERCRED of the listening process). The CLI trusts what the
// daemon answers: `run` execs `docker run` with the daemon's flags, `create`
// clones into and (as root) chowns the directory the daemon names. A socket
// path another user can influence (under sudo, ~SUDO_USER/.clauderon; a
// socket.path in a world-writable directory while the daemon is down) would
// otherwise let that user's fake daemon run what it likes as the caller.
func checkDaemonPeer(c net.Conn, socket string, euid int) error {
	peer, err := api.PeerOf(c)
	if err != nil {
		return fmt.Errorf("refusing %s: cannot tell who serves it: %w", socket, err)
	}
	if !daemonPeerAllowed(int(peer.UID), euid) {
		return fmt.Errorf("refusing %s: it is served by uid %d (pid %d), not by root or you; clauderond runs as root, so that is another user's program, which could make this command run what it likes (pass --socket with the daemon's real socket)",
			socket, peer.UID, peer.PID)
	}
	return nil
}

// daemonPeerAllowed: the daemon runs as root; a daemon of one's own (tests,
// a development daemon) is as trusted as oneself.
func daemonPeerAllowed(peerUID, euid int) bool { return peerUID == 0 || peerUID == euid }
