//go:build linux

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodemesh/nodemesh/bpf"
)

// inbound: socket mark (0: none). A stand-in for the node Envoy's inbound
// listener (no Envoy binary here): IP_TRANSPARENT on 0.0.0.0:15006 in the
// node's netns, with SO_MARK as the Envoy listener's socket_options set it.
// A captured connection's local address is the pod's address and port; it
// connects on to that, IP_TRANSPARENT and bound to the client's address
// (what Envoy's original_src does), and copies bytes. Standing for RBAC, it
// refuses with a 403 a request whose first line is not a GET. It prints one
// line per event: "accepted <client> <pod>", "refused <client> <method>",
// "upstream <its own address> <pod>", "upstream-error <client> <error>".
func inbound(args []string) error {
	mark, err := strconv.ParseUint(args[0], 0, 32)
	if err != nil {
		return err
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			if serr == nil && mark != 0 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}
		})
		return errors.Join(err, serr)
	}}
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", fmt.Sprintf("0.0.0.0:%d", bpf.ProxyInboundPort))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	acceptLoop(l, func(c net.Conn) {
		client, pod := c.RemoteAddr().(*net.TCPAddr), c.LocalAddr().(*net.TCPAddr)
		fmt.Println("accepted", client, pod)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if method, _, _ := strings.Cut(line, " "); method != http.MethodGet {
			fmt.Println("refused", client, method)
			io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nRBAC: access denied\n")
			return
		}
		d := dialer(3 * time.Second)
		d.LocalAddr = &net.TCPAddr{IP: client.IP}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1) })
			return errors.Join(err, serr)
		}
		up, err := d.Dial("tcp4", pod.String())
		if err != nil {
			fmt.Println("upstream-error", client, strings.ReplaceAll(err.Error(), " ", "_"))
			return
		}
		defer up.Close()
		fmt.Println("upstream", up.LocalAddr(), pod)
		if _, err := io.WriteString(up, line); err != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			io.Copy(up, br)
			up.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		io.Copy(c, up)
		<-done
	})
	return nil
}

// post: URL, timeout. Prints "<status> <body>".
func post(args []string) error {
	timeout, _ := time.ParseDuration(args[1])
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dialer(timeout).DialContext, DisableKeepAlives: true}}
	resp, err := c.Post(args[0], "text/plain", strings.NewReader("payload"))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	return nil
}
