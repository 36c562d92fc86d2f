package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// CNI commands forwarded to the agent.
const (
	CommandAdd   = "ADD"
	CommandDel   = "DEL"
	CommandCheck = "CHECK"
)

// requestPath is the one HTTP endpoint of the agent's socket.
const requestPath = "/v1/cni"

// Request is one CNI call as the plugin forwards it.
type Request struct {
	Command     string `json:"command"`
	ContainerID string `json:"containerID"`
	// Netns is the path of the pod's network namespace (CNI_NETNS); it may
	// be empty for DEL.
	Netns  string `json:"netns,omitempty"`
	IfName string `json:"ifName"`
	Pod    PodRef `json:"pod"`
	// Config is the network configuration as the runtime passed it (so the
	// agent sees prevResult for CHECK).
	Config json.RawMessage `json:"config,omitempty"`
}

// Response is the agent's answer: a result (ADD), nothing (DEL, CHECK), or a
// CNI error.
type Response struct {
	Result *types100.Result `json:"result,omitempty"`
	Error  *types.Error     `json:"error,omitempty"`
}

// Handler is what the agent implements. An error that is a *types.Error is
// returned to the runtime as is; any other becomes ErrInternal.
type Handler interface {
	Add(ctx context.Context, r *Request) (*types100.Result, error)
	Del(ctx context.Context, r *Request) error
	Check(ctx context.Context, r *Request) error
}

// Serve answers plugin requests on l until it is closed.
func Serve(l net.Listener, h Handler) error {
	srv := &http.Server{Handler: HTTPHandler(h), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// HTTPHandler is the protocol's HTTP side, for callers that run their own
// server.
func HTTPHandler(h Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+requestPath, func(w http.ResponseWriter, hr *http.Request) {
		var req Request
		var resp Response
		body, err := io.ReadAll(io.LimitReader(hr.Body, 1<<20))
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err != nil {
			resp.Error = types.NewError(types.ErrDecodingFailure, "decode request from nodemesh-cni", err.Error())
		} else {
			var res *types100.Result
			switch req.Command {
			case CommandAdd:
				res, err = h.Add(hr.Context(), &req)
			case CommandDel:
				err = h.Del(hr.Context(), &req)
			case CommandCheck:
				err = h.Check(hr.Context(), &req)
			default:
				err = types.NewError(types.ErrInvalidEnvironmentVariables, "unknown CNI command", req.Command)
			}
			resp.Result = res
			if err != nil {
				resp.Result = nil
				resp.Error = asCNIError(err)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&resp)
	})
	return mux
}

func asCNIError(err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// Call sends one request to the agent at socket and returns its result.
// Failing to reach the agent is ErrTryAgainLater: the runtime retries, and
// the agent may just be restarting.
func Call(ctx context.Context, socket string, req *Request) (*types100.Result, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "encode request", err.Error())
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://nodemesh-agent"+requestPath, bytes.NewReader(body))
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "build request", err.Error())
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := client.Do(hr)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "nodemesh agent is not reachable", fmt.Sprintf("%s: %v", socket, err))
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, types.NewError(types.ErrTryAgainLater, "nodemesh agent answered "+res.Status, socket)
	}
	var resp Response
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&resp); err != nil {
		return nil, types.NewError(types.ErrIOFailure, "decode the nodemesh agent's answer", err.Error())
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return resp.Result, nil
}
