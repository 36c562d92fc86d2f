//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestMasquerade: pods of node0 reach a host outside the cluster (an
// "outside" netns linked to node0 by ext0, with no route back to any pod
// CIDR) over TCP, UDP and ICMP echo with node0's address; an excluded
// address gets the pod's own address; pod-to-pod across nodes keeps the
// pod's address; a forged packet to a NAT port with a wrong tuple does not
// reach the pod; the node's own connection from a port a pod also uses
// works; without masquerading the outside cannot be reached; the cleanup
// leaves no program or pin. In native routing and VXLAN mode.
func TestMasquerade(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	if err := env.InstallCRDs(context.Background(), crds.All()); err != nil {
		t.Fatal(err)
	}
	for i, mode := range []string{agent.RoutingNative, agent.RoutingVXLAN} {
		t.Run(mode, func(t *testing.T) { masquerade(t, env, cgroupV2, mode, 90+i) })
	}
}

func masquerade(t *testing.T, env *kubetest.Env, cgroupV2, mode string, subnet int) {
	c := newCluster(t, env, cgroupV2, mode, subnet)
	n0, n1 := c.nodes[0], c.nodes[1]
	// The outside: 198.18.<subnet>.2 and .3 (.3 excluded), node0's ext0 at
	// .1; the outside has no route to pod CIDRs.
	outside := n0.id + "-outside"
	nodeExt, far, excluded := fmt.Sprintf("198.18.%d.1", subnet), fmt.Sprintf("198.18.%d.2", subnet), fmt.Sprintf("198.18.%d.3", subnet)
	run(t, "ip", "netns", "add", outside)
	t.Cleanup(func() { _ = execRun("ip", "netns", "del", outside) })
	run(t, "ip", "-n", outside, "link", "set", "lo", "up")
	run(t, "ip", "-n", n0.netnsName("node"), "link", "add", "ext0", "type", "veth", "peer", "name", "ext0", "netns", outside)
	run(t, "ip", "-n", n0.netnsName("node"), "addr", "add", nodeExt+"/24", "dev", "ext0")
	run(t, "ip", "-n", n0.netnsName("node"), "link", "set", "ext0", "up")
	run(t, "ip", "-n", outside, "addr", "add", far+"/24", "dev", "ext0")
	run(t, "ip", "-n", outside, "addr", "add", excluded+"/24", "dev", "ext0")
	run(t, "ip", "-n", outside, "link", "set", "ext0", "up")
	masqArgs := []string{"--masquerade", "--non-masquerade-cidr", excluded + "/32"}
	for i, n := range c.nodes {
		n.stopAgent(syscall.SIGKILL)
		n.agentArgs = append(n.agentArgs, masqArgs...)
		if i == 0 {
			n.agentArgs = append(n.agentArgs, "--uplink", "ext0")
		}
		n.startAgent()
	}
	ns := env.Namespace(t, "masq", nil)
	client0 := c.pod(0, ns, "client0", nil)
	server1 := c.pod(1, ns, "server1", nil)
	n1.daemon(server1.netns, server1.cgroup, "serve", "server1")
	outCG := filepath.Join(n0.cgroupRoot, "outside")
	n0.daemon(outside, outCG, "serve", "outside")
	udpWhoProc, _ := n0.daemon(outside, outCG, "udpwho", "9001")

	// ephemeral is a port of the node's ephemeral range (32768-60999 by
	// default), which the pod uses as its source port.
	const ephemeral = 40123

	t.Run("TCP, UDP and ping leave with the node's address", func(t *testing.T) {
		eventually(t, 20*time.Second, "client0 → outside (TCP)", func() error {
			out, err := n0.exec(client0, "get", "http://"+far+":8080/", "700ms")
			if err != nil || !strings.Contains(out, "hello from outside to "+nodeExt+":") {
				return fmt.Errorf("want the node's address %s: %v %q", nodeExt, err, out)
			}
			return nil
		})
		out, err := n0.exec(client0, "udpask", far+":9001", "0", "2s")
		if err != nil || !strings.HasPrefix(out, "from "+nodeExt+":") {
			t.Errorf("UDP: want the node's address %s: %v %q", nodeExt, err, out)
		}
		if out, err := n0.exec(client0, "ping", far, "2s"); err != nil {
			t.Errorf("ping %s: %v %s", far, err, out)
		}
	})

	t.Run("the NAT port leaves the node's ephemeral range to the node", func(t *testing.T) {
		out, err := n0.exec(client0, "getfrom", "http://"+far+":8080/", strconv.Itoa(ephemeral), "2s")
		if err != nil {
			t.Fatalf("pod from port %d: %v %s", ephemeral, err, out)
		}
		port := natPort(t, out, nodeExt)
		if port == ephemeral || port < 61000 {
			t.Errorf("pod's port %d left as %d: want a port above the ephemeral range", ephemeral, port)
		}
		// The pod's translation is live (closing, 10s); the node connects
		// to the same remote from the pod's port: its replies are its own.
		out, err = n0.execIn(n0.netnsName("node"), filepath.Join(n0.cgroupRoot, "host"), "getfrom", "http://"+far+":8080/", strconv.Itoa(ephemeral), "2s")
		if err != nil || !strings.Contains(out, "to "+nodeExt+":"+strconv.Itoa(ephemeral)) {
			t.Errorf("the node's own connection from port %d: %v %q", ephemeral, err, out)
		}
	})

	t.Run("an excluded destination gets the pod's address", func(t *testing.T) {
		if out, err := n0.exec(client0, "get", "http://"+excluded+":8080/", "700ms"); err == nil {
			t.Errorf("the outside has no route back to the pod, yet: %s", out)
		}
		// With a route back, the outside sees who asked: the pod for the
		// excluded address, the node for the other.
		run(t, "ip", "-n", outside, "route", "add", n0.podCIDR, "via", nodeExt)
		defer run(t, "ip", "-n", outside, "route", "del", n0.podCIDR, "via", nodeExt)
		out, err := n0.exec(client0, "get", "http://"+excluded+":8080/", "2s")
		if err != nil || !strings.Contains(out, "to "+client0.ip+":") {
			t.Errorf("excluded %s: want the pod's address %s: %v %q", excluded, client0.ip, err, out)
		}
		out, err = n0.exec(client0, "get", "http://"+far+":8080/", "2s")
		if err != nil || !strings.Contains(out, "to "+nodeExt+":") {
			t.Errorf("%s: want the node's address: %v %q", far, err, out)
		}
	})

	t.Run("a flow opened from outside is answered from the pod's address", func(t *testing.T) {
		// A network that routes pod CIDRs to the nodes: the outside opens
		// flows to the pod itself. Masquerading is for flows pods open:
		// the pod's replies keep its address (TCP, UDP, ping), which is
		// what the outside's connected sockets accept.
		run(t, "ip", "-n", outside, "route", "add", n0.podCIDR, "via", nodeExt)
		defer run(t, "ip", "-n", outside, "route", "del", n0.podCIDR, "via", nodeExt)
		n0.daemon(client0.netns, client0.cgroup, "serve", "client0")
		n0.daemon(client0.netns, client0.cgroup, "udpwho", "9002")
		eventually(t, 20*time.Second, "outside → client0 (TCP)", func() error {
			out, err := n0.execIn(outside, outCG, "get", "http://"+client0.ip+":8080/", "700ms")
			if err != nil || !strings.Contains(out, "hello from client0 to "+far+":") {
				return fmt.Errorf("want client0's answer to %s: %v %q", far, err, out)
			}
			return nil
		})
		if out, err := n0.execIn(outside, outCG, "udpask", client0.ip+":9002", "0", "2s"); err != nil || !strings.HasPrefix(out, "from "+far+":") {
			t.Errorf("outside → client0 (UDP): %v %q", err, out)
		}
		if out, err := n0.execIn(outside, outCG, "ping", client0.ip, "2s"); err != nil {
			t.Errorf("outside pings client0: %v %s", err, out)
		}
		// And the pod's own flows to the same remote are still masqueraded.
		out, err := n0.exec(client0, "get", "http://"+far+":8080/", "2s")
		if err != nil || !strings.Contains(out, "to "+nodeExt+":") {
			t.Errorf("client0 → outside while the outside's flows live: %v %q", err, out)
		}
	})

	t.Run("pod to pod across nodes keeps the pod's address", func(t *testing.T) {
		eventually(t, 20*time.Second, "client0 → server1", func() error {
			out, err := n0.exec(client0, "get", "http://"+server1.ip+":8080/", "700ms")
			if err != nil || !strings.Contains(out, "from server1 to "+client0.ip+":") {
				return fmt.Errorf("want client0's own address: %v %q", err, out)
			}
			return nil
		})
	})

	t.Run("a forged packet to a NAT port does not reach the pod", func(t *testing.T) {
		out, err := n0.exec(client0, "udpask", far+":9001", strconv.Itoa(ephemeral), "2s")
		if err != nil {
			t.Fatalf("udpask: %v %s", err, out)
		}
		port := natPort(t, out, nodeExt)
		udpWhoProc.Kill() // frees far:9001 for the legitimate sender below
		udpWhoProc.Wait()
		_, lines := n0.daemon(client0.netns, client0.cgroup, "udprecv", strconv.Itoa(ephemeral))
		got := make(chan string, 16)
		go func() {
			for lines.Scan() {
				got <- lines.Text()
			}
			close(got)
		}()
		to := nodeExt + ":" + strconv.Itoa(port)
		for _, send := range [][]string{
			{far + ":9999", to, "forged-port"},    // right remote, wrong port
			{excluded + ":9001", to, "forged-ip"}, // wrong remote, right port
			{far + ":9001", to, "legit"},          // the tuple of the translation
		} {
			if out, err := n0.execIn(outside, outCG, "udpsend", send...); err != nil {
				t.Fatalf("udpsend %v: %v %s", send, err, out)
			}
		}
		deadline := time.After(10 * time.Second)
		for done := false; !done; {
			select {
			case line, ok := <-got:
				if !ok {
					t.Fatal("udprecv ended")
				}
				if strings.Contains(line, "forged") {
					t.Errorf("a forged packet reached the pod: %q", line)
				}
				done = strings.Contains(line, "legit")
			case <-deadline:
				t.Fatal("the legitimate reply did not reach the pod")
			}
		}
	})

	t.Run("without masquerading the outside is out of reach", func(t *testing.T) {
		n0.stopAgent(syscall.SIGKILL)
		n0.agentArgs = slicesDelete(n0.agentArgs, "--masquerade")
		n0.startAgent()
		for _, p := range []string{"masq_out_ext0", "masq_in_ext0", "masq_out_ul0", "masq_in_ul0"} {
			if _, err := os.Stat(filepath.Join(n0.bpffs, "nodemesh", "links", p)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pin %s left with masquerading off: %v", p, err)
			}
		}
		if out, err := n0.exec(client0, "get", "http://"+far+":8080/", "700ms"); err == nil {
			t.Errorf("reached the outside without masquerading: %s", out)
		}
		n0.stopAgent(syscall.SIGKILL)
		n0.agentArgs = append(n0.agentArgs, "--masquerade")
		n0.startAgent()
		eventually(t, 20*time.Second, "masquerading back", func() error {
			out, err := n0.exec(client0, "get", "http://"+far+":8080/", "700ms")
			if err != nil || !strings.Contains(out, "to "+nodeExt+":") {
				return fmt.Errorf("%v %q", err, out)
			}
			return nil
		})
	})

	t.Run("the cleanup leaves no program or pin", func(t *testing.T) {
		n0.stopAgent(syscall.SIGTERM)
		out, err := execOut("ip", "netns", "exec", n0.netnsName("node"), n0.bin+"/nodemesh-agent", "cleanup",
			"--bpffs", n0.bpffs, "--cni-conf-dir", n0.cniConf, "--cni-bin-dir", n0.cniBin, "--state-dir", n0.stateDir)
		if err != nil {
			t.Fatalf("cleanup: %v\n%s", err, out)
		}
		for _, dev := range []string{"ext0", "ul0"} {
			if tcx, _ := n0.attached(t, n0.ifindex(t, dev)); tcx != 0 {
				t.Errorf("%s: %d tcx programs left", dev, tcx)
			}
		}
		if _, err := os.Stat(filepath.Join(n0.bpffs, "nodemesh")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pins left: %v", err)
		}
	})
}

// natPort is the port of "... <nodeAddr>:<port>" in a server's answer.
func natPort(t *testing.T, out, nodeAddr string) int {
	t.Helper()
	i := strings.Index(out, nodeAddr+":")
	if i < 0 {
		t.Fatalf("no %s in %q", nodeAddr, out)
	}
	f := strings.FieldsFunc(out[i+len(nodeAddr)+1:], func(r rune) bool { return r < '0' || r > '9' })
	port, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("port in %q: %v", out, err)
	}
	return port
}

func slicesDelete(s []string, v string) []string {
	var out []string
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

func execRun(name string, args ...string) error {
	_, err := execOut(name, args...)
	return err
}

// udpWho answers every datagram on port args[0] with "from <peer>".
func udpWho(args []string) error {
	pc, err := net.ListenPacket("udp4", ":"+args[0])
	if err != nil {
		return err
	}
	fmt.Println("ready")
	buf := make([]byte, 2048)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := pc.WriteTo([]byte("from "+from.String()), from); err != nil {
			return err
		}
	}
}

// udpAsk: address, local port (0: any), timeout. Sends a datagram and
// prints the answer.
func udpAsk(args []string) error {
	raddr, err := net.ResolveUDPAddr("udp4", args[0])
	if err != nil {
		return err
	}
	lport, _ := strconv.Atoi(args[1])
	timeout, _ := time.ParseDuration(args[2])
	c, err := net.DialUDP("udp4", &net.UDPAddr{Port: lport}, raddr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("hi")); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	fmt.Println(string(buf[:n]))
	return nil
}

// udpSend: local address:port, remote address:port, payload.
func udpSend(args []string) error {
	laddr, err := net.ResolveUDPAddr("udp4", args[0])
	if err != nil {
		return err
	}
	raddr, err := net.ResolveUDPAddr("udp4", args[1])
	if err != nil {
		return err
	}
	c, err := net.DialUDP("udp4", laddr, raddr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(args[2]))
	return err
}

// ping: address, timeout. One ICMP echo request over a raw socket; waits
// for the echo reply from address with the request's identifier.
func ping(args []string) error {
	dst := net.ParseIP(args[0]).To4()
	timeout, _ := time.ParseDuration(args[1])
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	id := uint16(os.Getpid())
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'n', 'm'}
	var sum uint32
	for i := 0; i < len(msg); i += 2 {
		sum += uint32(msg[i])<<8 | uint32(msg[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	cs := ^uint16(sum)
	msg[2], msg[3] = byte(cs>>8), byte(cs)
	to := &unix.SockaddrInet4{}
	copy(to.Addr[:], dst)
	if err := unix.Sendto(fd, msg, 0, to); err != nil {
		return err
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("no echo reply: %w", err)
		}
		f, ok := from.(*unix.SockaddrInet4)
		if !ok || n < 28 || !net.IP(f.Addr[:]).Equal(dst) {
			continue
		}
		ihl := int(buf[0]&0xf) * 4
		if n >= ihl+8 && buf[ihl] == 0 && uint16(buf[ihl+4])<<8|uint16(buf[ihl+5]) == id {
			fmt.Println("echo reply from", args[0])
			return nil
		}
	}
}

// getFrom: URL, local port, timeout. An HTTP GET from that source port.
func getFrom(args []string) error {
	lport, _ := strconv.Atoi(args[1])
	timeout, _ := time.ParseDuration(args[2])
	d := dialer(timeout)
	d.LocalAddr = &net.TCPAddr{Port: lport}
	d.Control = func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		return errors.Join(err, serr)
	}
	return printGet(&http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}, args[0])
}
