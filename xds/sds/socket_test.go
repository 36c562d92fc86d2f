package sds

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestSocketIsPrivate: the directory becomes 0700 and the socket 0600
// (even when the directory existed with 0755, as a hostPath
// DirectoryOrCreate makes it); a symlinked directory, a directory of
// another user and a non-socket file at the path are refused.
func TestSocketIsPrivate(t *testing.T) {
	for name, tc := range map[string]struct {
		setup   func(t *testing.T, dir string) string // returns the socket path
		wantErr string
	}{
		"new directory": {setup: func(t *testing.T, dir string) string { return filepath.Join(dir, "sds", "socket") }},
		"existing 0755 directory": {setup: func(t *testing.T, dir string) string {
			d := filepath.Join(dir, "sds")
			mustT(t, os.Mkdir(d, 0o755))
			mustT(t, os.Chmod(d, 0o755))
			return filepath.Join(d, "socket")
		}},
		"stale socket replaced": {setup: func(t *testing.T, dir string) string {
			s, err := Listen(Options{Socket: filepath.Join(dir, "sds", "socket")})
			mustT(t, err)
			s.ln.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
			s.Stop()
			return filepath.Join(dir, "sds", "socket")
		}},
		"symlinked directory": {setup: func(t *testing.T, dir string) string {
			mustT(t, os.Mkdir(filepath.Join(dir, "real"), 0o700))
			mustT(t, os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "sds")))
			return filepath.Join(dir, "sds", "socket")
		}, wantErr: "not a directory"},
		"a regular file at the path": {setup: func(t *testing.T, dir string) string {
			mustT(t, os.Mkdir(filepath.Join(dir, "sds"), 0o700))
			mustT(t, os.WriteFile(filepath.Join(dir, "sds", "socket"), nil, 0o600))
			return filepath.Join(dir, "sds", "socket")
		}, wantErr: "not a socket"},
		"another user's directory": {setup: func(t *testing.T, dir string) string {
			if os.Geteuid() != 0 {
				t.Skip("needs root to chown a directory to another user")
			}
			d := filepath.Join(dir, "sds")
			mustT(t, os.Mkdir(d, 0o700))
			mustT(t, os.Chown(d, 65534, 65534))
			return filepath.Join(d, "socket")
		}, wantErr: "not owned"},
		"relative path": {setup: func(*testing.T, string) string { return "sds/socket" }, wantErr: "absolute"},
	} {
		t.Run(name, func(t *testing.T) {
			path := tc.setup(t, t.TempDir())
			s, err := Listen(Options{Socket: path})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Listen = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			mustT(t, err)
			defer s.Stop()
			for p, want := range map[string]fs.FileMode{filepath.Dir(path): 0o700, path: 0o600} {
				st, err := os.Stat(p)
				mustT(t, err)
				if st.Mode().Perm() != want {
					t.Errorf("%s mode %v, want %v", p, st.Mode().Perm(), want)
				}
			}
		})
	}
}

// TestPeerNotAllowed: a connection whose peer user is not allowed gets no
// secret (the handshake fails before gRPC reads a request), even though
// the file modes let it in (here: the same user, not in AllowedUIDs).
func TestPeerNotAllowed(t *testing.T) {
	ca := newTestCA(t, "root")
	srv, socket := startServer(t, Options{AllowedUIDs: []uint32{uint32(os.Geteuid()) + 4242}})
	srv.Update(ca.issue(t, idA, time.Now(), time.Now().Add(time.Hour)))
	if err := fetchOnce(socket); err == nil {
		t.Fatal("a peer not allowed was served")
	}
	srv2, socket2 := startServer(t, Options{})
	srv2.Update(ca.issue(t, idA, time.Now(), time.Now().Add(time.Hour)))
	if err := fetchOnce(socket2); err != nil {
		t.Fatalf("this process's own user was refused: %v", err)
	}
}

// TestOtherUserCannotConnect: another local user (nobody) cannot even
// reach the socket: the 0700 directory stops it at connect(2). Root only
// (the client runs as uid 65534 in a child process).
func TestOtherUserCannotConnect(t *testing.T) {
	if os.Getenv("SDS_TEST_CLIENT") != "" {
		if err := fetchOnce(os.Getenv("SDS_TEST_CLIENT")); err != nil {
			os.Exit(3)
		}
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the client runs as another user")
	}
	ca := newTestCA(t, "root")
	// Every directory above the socket's is traversable by others (not
	// t.TempDir, whose parent is 0700): only the socket's own directory
	// and mode guard it.
	dir, err := os.MkdirTemp("", "sds-socket-")
	mustT(t, err)
	defer os.RemoveAll(dir)
	mustT(t, os.Chmod(dir, 0o755))
	srv, socket := startServer(t, Options{Socket: filepath.Join(dir, "sds", "socket"), AllowedUIDs: []uint32{0, 65534}})
	srv.Update(ca.issue(t, idA, time.Now(), time.Now().Add(time.Hour)))
	// The test binary, where the other user may execute it.
	binDir, err := os.MkdirTemp("", "sds-client-")
	mustT(t, err)
	defer os.RemoveAll(binDir)
	mustT(t, os.Chmod(binDir, 0o755))
	self, err := os.ReadFile(os.Args[0])
	mustT(t, err)
	bin := filepath.Join(binDir, "sds.test")
	mustT(t, os.WriteFile(bin, self, 0o755))
	cmd := exec.Command(bin, "-test.run=^TestOtherUserCannotConnect$")
	cmd.Env = append(os.Environ(), "SDS_TEST_CLIENT="+socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("client as uid 65534: err %v (want exit 3: refused), output:\n%s", err, out)
	}
}

// fetchOnce asks for idA's secret and ROOTCA, and succeeds only when a
// response with a secret arrives.
func fetchOnce(socket string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: []string{idA.String(), RootCASecret}}); err != nil {
		return err
	}
	resp, err := st.Recv()
	if err != nil {
		return err
	}
	if len(resp.GetResources()) == 0 {
		return errors.New("empty response")
	}
	return nil
}

func mustT(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
