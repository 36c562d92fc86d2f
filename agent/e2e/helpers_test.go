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
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodemesh/nodemesh/bpf"
)

// The test binary doubles as the processes that run in pods and on the node:
// TestMain runs helper mode when helperEnv is set. Arguments come in
// helperArgsEnv, separated by spaces.
const (
	helperEnv     = "NODEMESH_E2E_HELPER"
	helperArgsEnv = "NODEMESH_E2E_ARGS"
)

func runHelper(mode string) int {
	args := strings.Fields(os.Getenv(helperArgsEnv))
	var err error
	switch mode {
	case "serve":
		err = serve(args)
	case "listenports":
		err = listenPorts(args)
	case "get":
		err = get(args)
	case "proxy":
		err = proxy()
	case "tproxy":
		err = tproxy(args)
	case "connect":
		err = connect(args)
	case "echo":
		err = echo(args)
	case "stream":
		err = stream(args)
	case "perfserve":
		err = perfServe()
	case "rr":
		err = perfRR(args)
	case "crr":
		err = perfCRR(args)
	case "bulk":
		err = perfBulk(args)
	case "splice":
		err = splice(args)
	case "serve6":
		err = serve6(args)
	case "connect6":
		err = connect6(args)
	case "udprecv":
		err = udpRecv(args)
	case "rawudp":
		err = rawUDP(args)
	case "lbget":
		err = lbGet(args)
	case "dnsserve":
		err = dnsServe()
	case "dnsq":
		err = dnsQuery(args)
	case "resolve":
		err = resolve(args)
	case "udpwho":
		err = udpWho(args)
	case "udpask":
		err = udpAsk(args)
	case "udpsend":
		err = udpSend(args)
	case "ping":
		err = ping(args)
	case "getfrom":
		err = getFrom(args)
	case "inbound":
		err = inbound(args)
	case "upstream":
		err = upstream(args)
	case "post":
		err = post(args)
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	return 0
}

// listen opens a plain TCP (not MPTCP) listener, like Envoy's.
func listen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp4", addr)
}

// serve runs an HTTP server on :8080 and a line echo server on :9000 until
// killed; it prints "ready" once both listen.
func serve(args []string) error {
	name := "server"
	if len(args) > 0 {
		name = args[0]
	}
	hl, err := listen(":8080")
	if err != nil {
		return err
	}
	el, err := listen(":9000")
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := el.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	fmt.Println("ready")
	return http.Serve(hl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s to %s", name, r.RemoteAddr)
	}))
}

// listenPorts listens on each port given and greets every connection with
// "hello from <port>" (what connect prints); "ready" once all listen.
func listenPorts(args []string) error {
	for _, port := range args {
		l, err := listen(":" + port)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "hello from %s\n", port)
				c.Close()
			}
		}()
	}
	fmt.Println("ready")
	select {}
}

func dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	d.SetMultipathTCP(false)
	return d
}

// get: URL, timeout. Prints "200 <body>".
func get(args []string) error {
	timeout, _ := time.ParseDuration(args[1])
	return printGet(&http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dialer(timeout).DialContext, DisableKeepAlives: true}}, args[0])
}

// printGet GETs url and prints "<status> <body>".
func printGet(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	return nil
}

// proxy stands for the node proxy: it listens on 0.0.0.0:15001 and answers
// each connection with what SO_ORIGINAL_DST says, then closes it.
func proxy() error {
	l, err := listen(fmt.Sprintf("0.0.0.0:%d", bpf.ProxyOutboundPort))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		orig, oerr := bpf.OriginalDst(c.(*net.TCPConn))
		if oerr != nil {
			fmt.Fprintf(c, "origdst-error=%v\n", oerr)
		} else {
			fmt.Fprintf(c, "origdst=%s peer=%s\n", orig, c.RemoteAddr())
		}
		c.Close()
	}
}

// tproxy: backend. What the node Envoy does with original_src: accepts the
// redirected connections on 15001 and connects to backend from the
// client's own address (a transparent socket in the node's netns), then
// splices. An upstream that cannot be reached closes the client's
// connection.
func tproxy(args []string) error {
	backend := args[0]
	l, err := listen(fmt.Sprintf("0.0.0.0:%d", bpf.ProxyOutboundPort))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	acceptLoop(l, func(c net.Conn) {
		d := dialer(3 * time.Second)
		d.LocalAddr = &net.TCPAddr{IP: c.RemoteAddr().(*net.TCPAddr).IP}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
		up, err := d.Dial("tcp4", backend)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tproxy: %v\n", err)
			return
		}
		defer up.Close()
		pipe(c, up)
	})
	return nil
}

// connect: address, timeout. Prints the first line the server sends and
// what getpeername says.
func connect(args []string) error {
	timeout, _ := time.ParseDuration(args[1])
	c, err := dialer(timeout).Dial("tcp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	fmt.Printf("%s getpeername=%s\n", strings.TrimSpace(line), c.RemoteAddr())
	return nil
}

// stream: address, duration. Sends a line every 20 ms on one connection and
// checks its echo; any error (a reset, a 2 s stall) fails. Prints "ok <n>".
func stream(args []string) error {
	d, _ := time.ParseDuration(args[1])
	c, err := dialer(2*time.Second).Dial("tcp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("connected")
	r := bufio.NewReader(c)
	end := time.Now().Add(d)
	n := 0
	for time.Now().Before(end) {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		msg := "ping " + strconv.Itoa(n) + "\n"
		if _, err := io.WriteString(c, msg); err != nil {
			return fmt.Errorf("write %d: %w", n, err)
		}
		got, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read %d: %w", n, err)
		}
		if got != msg {
			return errors.New("echo mismatch: " + got)
		}
		n++
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Println("ok", n)
	return nil
}

// echo: address, timeout. Sends a line and expects it back.
func echo(args []string) error {
	timeout, _ := time.ParseDuration(args[1])
	c, err := dialer(timeout).Dial("tcp4", args[0])
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
