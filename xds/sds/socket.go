package sds

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
)

func euid() int { return os.Geteuid() }

// listenPrivate listens on a unix socket in a directory only this user can
// enter. The directory is tightened before the socket exists, so there is
// no moment where the socket (created with the umask's mode) is reachable
// by others; then the socket itself is made 0600.
func listenPrivate(path string) (net.Listener, error) {
	if path == "" || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("sds socket %q: an absolute path is required", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sds socket directory: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("sds socket directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("sds socket directory %s is not a directory (a symlink is refused)", dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != euid() {
		return nil, fmt.Errorf("sds socket directory %s is not owned by this process's user (uid %d): refusing to serve keys there", dir, euid())
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sds socket directory: %w", err)
	}
	// A socket left by a previous run is replaced; anything else is not
	// ours to delete.
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("sds socket %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("sds socket: remove stale: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("sds socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("sds socket: %w", err)
	}
	return ln, nil
}

// peerCredentials admits a connection only from an allowed user, by the
// kernel's record of the peer (SO_PEERCRED), whatever the file modes: a
// second check in case the directory's mode is ever loosened by someone
// else (a hostPath is the node's). Not TLS: the socket never leaves the
// node.
type peerCredentials struct {
	allowed []uint32
	log     *slog.Logger
}

type peerInfo struct {
	credentials.CommonAuthInfo
	UID uint32
	PID int32
}

func (peerInfo) AuthType() string { return "unix-peercred" }

// ErrPeerRefused is the handshake error for a peer not allowed.
var ErrPeerRefused = errors.New("sds: peer not allowed")

func (p peerCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("%w: not a unix connection", ErrPeerRefused)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, nil, err
	}
	if serr != nil {
		return nil, nil, fmt.Errorf("sds: peer credentials: %w", serr)
	}
	if !slices.Contains(p.allowed, cred.Uid) {
		p.log.Warn("sds: connection refused", "uid", cred.Uid, "pid", cred.Pid)
		return nil, nil, fmt.Errorf("%w: uid %d", ErrPeerRefused, cred.Uid)
	}
	return c, peerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, UID: cred.Uid, PID: cred.Pid}, nil
}

func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("sds: server credentials only")
}

func (p peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peercred"}
}

func (p peerCredentials) Clone() credentials.TransportCredentials {
	return peerCredentials{allowed: slices.Clone(p.allowed), log: p.log}
}

func (peerCredentials) OverrideServerName(string) error { return nil }
