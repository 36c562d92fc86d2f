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
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodemesh/nodemesh/bpf"
)

// inbound: socket mark (0: none), upstream socket mark (0: none). A
// stand-in for the node Envoy's inbound listener (no Envoy binary here):
// IP_TRANSPARENT on 0.0.0.0:15006 in the node's netns, with SO_MARK as the
// Envoy listener's socket_options set it. A connection captured at tc
// (bpf_sk_assign) has the pod's address and port as its local address; one
// the node proxy's own upstream made (cgroup/connect4) has the node's, and
// SO_ORIGINAL_DST answers the pod's — what Envoy's original_dst listener
// filter asks. It connects on to the pod, IP_TRANSPARENT, bound to the
// client's address and with the upstream mark (what the inbound cluster's
// original_src does), and copies bytes. Standing for RBAC, it refuses with a
// 403 a request whose first line is not a GET. It prints one line per event:
// "accepted <client> <pod> <origdst|local>", "refused <client> <method>",
// "upstream <its own address> <pod>", "upstream-error <client> <error>",
// "overload <client>" (more than 64 connections at once: a loop, cut
// short so that a broken build cannot run away with the machine).
func inbound(args []string) error {
	mark, err := strconv.ParseUint(args[0], 0, 32)
	if err != nil {
		return err
	}
	upMark, err := strconv.ParseUint(args[1], 0, 32)
	if err != nil {
		return err
	}
	var active atomic.Int32
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
		if active.Add(1) > 64 {
			fmt.Println("overload", client)
			return
		}
		defer active.Add(-1)
		how := "local"
		if orig, err := bpf.OriginalDst(c.(*net.TCPConn)); err == nil {
			pod, how = net.TCPAddrFromAddrPort(orig), "origdst"
		}
		fmt.Println("accepted", client, pod, how)
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
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
				if serr == nil && upMark != 0 {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(upMark))
				}
			})
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

// upstream: method (GET, POST or ECHO), URL (address:port for ECHO), bind
// address ("-": none), socket mark (0: none), timeout. Stands for an
// upstream connection of the node Envoy's outbound listener: in the node's
// netns, IP_TRANSPARENT and bound to the client pod's address (original_src),
// to a backend pod. GET and POST print "<status> <body>"; ECHO sends a line
// and prints what comes back.
func upstream(args []string) error {
	method, target, bind := args[0], args[1], args[2]
	mark, err := strconv.ParseUint(args[3], 0, 32)
	if err != nil {
		return err
	}
	timeout, _ := time.ParseDuration(args[4])
	d := dialer(timeout)
	if bind != "-" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(bind)}
	}
	d.Control = func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if bind != "-" {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			}
			if serr == nil && mark != 0 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}
		})
		return errors.Join(err, serr)
	}
	if method == "ECHO" {
		c, err := d.Dial("tcp4", target)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := io.WriteString(c, "hello\n"); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		fmt.Print(line)
		return nil
	}
	req, err := http.NewRequest(method, target, strings.NewReader("payload"))
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	return nil
}
