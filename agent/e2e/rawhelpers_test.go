//go:build linux

package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Helpers of the fail-closed tests (failclosed_test.go): IPv6 TCP, a UDP
// receiver, and hand-made frames sent from a pod.

// serve6: port. A TCP server on [::]:port (IPv6 only) that greets each
// connection with "hello6" and closes it. Prints "ready".
func serve6(args []string) error {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp6", "[::]:"+args[0])
	if err != nil {
		return err
	}
	fmt.Println("ready")
	acceptLoop(l, func(c net.Conn) { fmt.Fprintln(c, "hello6") })
	return nil
}

// connect6: address (with a zone for link-local), timeout. Prints the
// server's first line.
func connect6(args []string) error {
	timeout, _ := time.ParseDuration(args[1])
	c, err := dialer(timeout).Dial("tcp6", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	fmt.Print(line)
	return nil
}

// udpRecv: port. Prints "ready", then "<source address> <payload>" for
// every datagram to 0.0.0.0:port, in the order they arrive.
func udpRecv(args []string) error {
	pc, err := net.ListenPacket("udp4", "0.0.0.0:"+args[0])
	if err != nil {
		return err
	}
	fmt.Println("ready")
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		fmt.Printf("%s %s\n", from.(*net.UDPAddr).IP, buf[:n])
	}
}

// rawUDP: interface, destination MAC, then frames as
// "<tpids>/<src ip>/<dst ip>/<dst port>/<payload>" (tpids: "-" or a comma
// list of VLAN tag protocol IDs in hex, outermost first; every tag VLAN 0).
// Each is an Ethernet/IPv4/UDP frame sent as it is through an AF_PACKET
// socket, one after another from one thread on CPU 0: a veth queues what a
// CPU sends in order, so the frames reach the other end in this order.
func rawUDP(args []string) error {
	ifi, err := net.InterfaceByName(args[0])
	if err != nil {
		return err
	}
	dst, err := net.ParseMAC(args[1])
	if err != nil {
		return err
	}
	var cpus unix.CPUSet
	cpus.Set(0)
	if err := unix.SchedSetaffinity(0, &cpus); err != nil {
		return fmt.Errorf("pin to CPU 0: %w", err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
	copy(to.Addr[:], dst)
	for _, spec := range args[2:] {
		f := strings.SplitN(spec, "/", 5)
		if len(f) != 5 {
			return fmt.Errorf("frame %q: want tpids/src/dst/port/payload", spec)
		}
		var tpids []uint16
		if f[0] != "-" {
			for _, x := range strings.Split(f[0], ",") {
				v, err := strconv.ParseUint(x, 16, 16)
				if err != nil {
					return fmt.Errorf("frame %q: %w", spec, err)
				}
				tpids = append(tpids, uint16(v))
			}
		}
		port, err := strconv.ParseUint(f[3], 10, 16)
		if err != nil {
			return fmt.Errorf("frame %q: %w", spec, err)
		}
		frame := udpFrame(dst, ifi.HardwareAddr, tpids, netip.MustParseAddr(f[1]), netip.MustParseAddr(f[2]), uint16(port), []byte(f[4]))
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			return fmt.Errorf("send %q: %w", spec, err)
		}
	}
	fmt.Println("sent")
	return nil
}

// udpFrame builds an Ethernet frame with VLAN tags (VLAN 0) carrying an
// IPv4/UDP datagram (UDP checksum 0: none, as IPv4 allows).
func udpFrame(dst, src net.HardwareAddr, tpids []uint16, from, to netip.Addr, port uint16, payload []byte) []byte {
	udp := binary.BigEndian.AppendUint16(nil, 40000)
	udp = binary.BigEndian.AppendUint16(udp, port)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(binary.BigEndian.AppendUint16(udp, 0), payload...)
	ip := make([]byte, 20)
	ip[0] = 4<<4 | 5
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	ip[8], ip[9] = 64, unix.IPPROTO_UDP
	f4, t4 := from.As4(), to.As4()
	copy(ip[12:], f4[:])
	copy(ip[16:], t4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	frame := append(append([]byte(nil), dst...), src...)
	for _, tpid := range tpids {
		frame = binary.BigEndian.AppendUint16(frame, tpid)
		frame = binary.BigEndian.AppendUint16(frame, 0)
	}
	frame = binary.BigEndian.AppendUint16(frame, unix.ETH_P_IP)
	return append(append(frame, ip...), udp...)
}
