//go:build linux

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// lbGet: address, timeout. One HTTP/1.0 request over a plain TCP
// connection; prints "peer=<getpeername> <body>".
func lbGet(args []string) error {
	timeout, _ := time.ParseDuration(args[1])
	c, err := dialer(timeout).Dial("tcp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return err
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	_, body, _ := strings.Cut(string(resp), "\r\n\r\n")
	fmt.Printf("peer=%s %s\n", c.RemoteAddr(), body)
	return nil
}

// dnsServe answers every A question with 192.0.2.53, on UDP and TCP port
// 53, until killed; prints "ready".
func dnsServe() error {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
					A: net.ParseIP("192.0.2.53")})
			}
		}
		w.WriteMsg(m)
	})
	errs := make(chan error, 2)
	started := make(chan struct{}, 2)
	for _, netw := range []string{"udp4", "tcp4"} {
		srv := &dns.Server{Addr: ":53", Net: netw, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
		go func() { errs <- srv.ListenAndServe() }()
	}
	for range 2 {
		select {
		case err := <-errs:
			return err
		case <-started:
		}
	}
	fmt.Println("ready")
	return <-errs
}

// dnsQuery: server address, timeout. An A query for probe.example. from an
// unconnected UDP socket (sendto/recvfrom, so the reply's source address
// is what recvmsg reports); prints "from=<address> answer=<A>".
func dnsQuery(args []string) error {
	timeout, _ := time.ParseDuration(args[1])
	to, err := netip.ParseAddrPort(args[0])
	if err != nil {
		return err
	}
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion("probe.example.", dns.TypeA)
	wire, err := q.Pack()
	if err != nil {
		return err
	}
	if _, err := c.WriteToUDPAddrPort(wire, to); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return err
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil {
		return err
	}
	if r.Id != q.Id || len(r.Answer) != 1 {
		return fmt.Errorf("unexpected answer %v", r)
	}
	fmt.Printf("from=%s answer=%s\n", from, r.Answer[0].(*dns.A).A)
	return nil
}

// resolve: server address, timeout. Go's own DNS client (connected UDP, as
// a pod's resolver uses /etc/resolv.conf's nameserver) looks up
// probe.example. through that server; prints the addresses.
func resolve(args []string) error {
	timeout, _ := time.ParseDuration(args[1])
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp4", args[0])
	}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	addrs, err := r.LookupHost(ctx, "probe.example.")
	if err != nil {
		return err
	}
	fmt.Println(strings.Join(addrs, ","))
	return nil
}
