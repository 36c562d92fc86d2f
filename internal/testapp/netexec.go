package testapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// netexec's defaults are agnhost's.
const (
	DefaultHTTPPort = 8080
	DefaultUDPPort  = 8081
)

func runNetexec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("netexec", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: nodemesh-testapp netexec [--http-port=8080] [--udp-port=8081]

The echo server of 'nodemesh check', with the endpoints of Kubernetes' agnhost netexec
it needs (agnhost's command line shape, so either image runs with the same arguments):

  /           "NOW: <time>"
  /hostname   the host name (a pod's name), no newline
  /healthz    200 "ok" (the readiness probe)
  /echo       ?msg=TEXT answers TEXT; &code=N answers with status N
  /clientip   the client's address, host:port
  /header     ?key=NAME answers the request's header NAME

UDP (one datagram in, one out): "hostname", "echo TEXT", "clientip".
agnhost's /shell, /dial, /exit and /upload are left out on purpose: they
would let any client run commands, proxy requests or stop the server.

Flags:
`)
		fs.PrintDefaults()
	}
	httpPort := fs.Int("http-port", DefaultHTTPPort, "HTTP port")
	udpPort := fs.Int("udp-port", DefaultUDPPort, "UDP port (-1: none)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if *httpPort < 1 || *httpPort > 65535 {
		return usageError{fmt.Errorf("--http-port %d: not a port", *httpPort)}
	}
	if *udpPort != -1 && (*udpPort < 1 || *udpPort > 65535) {
		return usageError{fmt.Errorf("--udp-port %d: not a port (-1 for none)", *udpPort)}
	}
	host, err := hostname()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	udpErr := make(chan error, 1)
	if *udpPort != -1 {
		pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(*udpPort))
		if err != nil {
			return fmt.Errorf("listen on udp port %d: %w", *udpPort, err)
		}
		go func() {
			<-ctx.Done()
			pc.Close()
		}()
		go func() {
			err := ServeUDP(pc, host)
			if ctx.Err() == nil {
				udpErr <- err
				cancel()
			}
		}()
	}
	fmt.Fprintf(stdout, "nodemesh-testapp %s: netexec on http :%d, udp :%d as %s\n", Version, *httpPort, *udpPort, host)
	if err := serveHTTP(ctx, ":"+strconv.Itoa(*httpPort), NetexecHandler(host)); err != nil {
		return err
	}
	select {
	case err := <-udpErr:
		return fmt.Errorf("serve udp: %w", err)
	default:
		return nil
	}
}

// NetexecHandler serves netexec's HTTP endpoints as the host host.
func NetexecHandler(host string) http.Handler {
	mux := http.NewServeMux()
	text := func(w http.ResponseWriter, code int, s string) {
		// Plain text, never sniffed: /echo and /header reflect what the
		// client sent.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(code)
		io.WriteString(w, s)
	}
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, fmt.Sprintf("NOW: %v", time.Now()))
	})
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, host)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusOK
		if c := r.URL.Query().Get("code"); c != "" {
			n, err := strconv.Atoi(c)
			if err != nil || n < 200 || n > 599 {
				text(w, http.StatusBadRequest, fmt.Sprintf("code %q: want a status from 200 to 599", c))
				return
			}
			code = n
		}
		text(w, code, r.URL.Query().Get("msg"))
	})
	mux.HandleFunc("/clientip", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, r.RemoteAddr)
	})
	mux.HandleFunc("/header", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, r.Header.Get(r.URL.Query().Get("key")))
	})
	// nodemesh's own: one long response, a numbered line every 100 ms for
	// ?seconds=N (at most 600) — a long-lived connection whose loss (a
	// reset, a stall) the client sees as a short or failed transfer.
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		secs, err := strconv.Atoi(r.URL.Query().Get("seconds"))
		if err != nil || secs < 1 || secs > 600 {
			text(w, http.StatusBadRequest, "seconds: want 1 to 600")
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fl, _ := w.(http.Flusher)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 1; i <= secs*10; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
			fmt.Fprintf(w, "%d\n", i)
			if fl != nil {
				fl.Flush()
			}
		}
	})
	return mux
}

// ServeUDP answers netexec's UDP commands on pc until it is closed.
func ServeUDP(pc net.PacketConn, host string) error {
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if reply, ok := udpReply(strings.TrimSpace(string(buf[:n])), host, from); ok {
			// A lost reply is the client's to retry, as with any UDP server.
			_, _ = pc.WriteTo([]byte(reply), from)
		}
	}
}

// udpReply is the answer to one datagram; unknown commands get none, so the
// server never answers more than it was sent plus its host name.
func udpReply(cmd, host string, from net.Addr) (string, bool) {
	switch {
	case cmd == "hostname":
		return host, true
	case cmd == "clientip":
		return from.String(), true
	case strings.HasPrefix(cmd, "echo "):
		return strings.TrimPrefix(cmd, "echo "), true
	}
	return "", false
}
