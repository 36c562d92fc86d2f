package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

const goodConf = `{"cniVersion":"1.0.0","name":"nodemesh","type":"nodemesh-cni","agentSocket":"/run/nodemesh/cni.sock"}`

func TestParseConfig(t *testing.T) {
	tests := map[string]struct {
		in   string
		code uint // 0: valid
	}{
		"valid":                  {in: goodConf},
		"not json":               {in: `{`, code: types.ErrDecodingFailure},
		"wrong type":             {in: `{"cniVersion":1}`, code: types.ErrDecodingFailure},
		"no version":             {in: `{"name":"n","agentSocket":"/s"}`, code: types.ErrInvalidNetworkConfig},
		"no name":                {in: `{"cniVersion":"1.0.0","agentSocket":"/s"}`, code: types.ErrInvalidNetworkConfig},
		"no socket":              {in: `{"cniVersion":"1.0.0","name":"n"}`, code: types.ErrInvalidNetworkConfig},
		"relative socket":        {in: `{"cniVersion":"1.0.0","name":"n","agentSocket":"cni.sock"}`, code: types.ErrInvalidNetworkConfig},
		"negative timeout":       {in: `{"cniVersion":"1.0.0","name":"n","agentSocket":"/s","timeoutSeconds":-1}`, code: types.ErrInvalidNetworkConfig},
		"bad prevResult":         {in: `{"cniVersion":"1.0.0","name":"n","agentSocket":"/s","prevResult":{"ips":[{"address":"x"}]}}`, code: types.ErrDecodingFailure},
		"good prevResult":        {in: `{"cniVersion":"1.0.0","name":"n","agentSocket":"/s","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/32"}]}}`},
		"unknown fields ignored": {in: `{"cniVersion":"1.0.0","name":"n","agentSocket":"/s","extra":{"a":1}}`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.in))
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if c.AgentSocket == "" {
					t.Fatal("no socket")
				}
				return
			}
			if err == nil || err.Code != tc.code {
				t.Fatalf("error = %v, want code %d", err, tc.code)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := map[string]struct {
		in      string
		require bool
		want    PodRef
		code    uint
	}{
		"kubelet args": {in: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u", require: true,
			want: PodRef{Namespace: "ns", Name: "p", UID: "u"}},
		"unknown keys ignored": {in: "FOO=bar;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", require: true, want: PodRef{Namespace: "ns", Name: "p"}},
		"empty for DEL":        {in: "", require: false},
		"empty for ADD":        {in: "", require: true, code: types.ErrInvalidEnvironmentVariables},
		"malformed pair":       {in: "K8S_POD_NAME", code: types.ErrInvalidEnvironmentVariables},
		"slash in name":        {in: "K8S_POD_NAMESPACE=a/b;K8S_POD_NAME=p", code: types.ErrInvalidEnvironmentVariables},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseArgs(tc.in, tc.require)
			if tc.code != 0 {
				if err == nil || err.Code != tc.code {
					t.Fatalf("error = %v, want code %d", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// fakeAgent records requests and answers ADD with a fixed result.
type fakeAgent struct {
	reqs []Request
	err  error
}

func (f *fakeAgent) Add(_ context.Context, r *Request) (*types100.Result, error) {
	f.reqs = append(f.reqs, *r)
	if f.err != nil {
		return nil, f.err
	}
	ip := netip.MustParsePrefix("10.244.0.2/32")
	return &types100.Result{CNIVersion: "1.0.0", IPs: []*types100.IPConfig{{
		Address: net.IPNet{IP: ip.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}, Gateway: net.ParseIP("10.244.0.1"),
	}}}, nil
}

func (f *fakeAgent) Del(_ context.Context, r *Request) error {
	f.reqs = append(f.reqs, *r)
	return f.err
}

func (f *fakeAgent) Check(_ context.Context, r *Request) error {
	f.reqs = append(f.reqs, *r)
	return f.err
}

func serveFake(t *testing.T, f *fakeAgent) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cni.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go Serve(l, f)
	t.Cleanup(func() { l.Close() })
	return sock
}

func confFor(sock string) []byte {
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "nodemesh", "type": PluginType, "agentSocket": sock})
	return b
}

func TestPluginRoundTrip(t *testing.T) {
	f := &fakeAgent{}
	sock := serveFake(t, f)
	var out bytes.Buffer
	p := &Plugin{Stdout: &out}
	args := &skel.CmdArgs{ContainerID: "abc", Netns: "/run/netns/x", IfName: "eth0",
		Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", StdinData: confFor(sock)}
	if err := p.Add(args); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res, err := types100.NewResult(out.Bytes())
	if err != nil {
		t.Fatalf("ADD printed %q: %v", out.String(), err)
	}
	if r := res.(*types100.Result); len(r.IPs) != 1 || r.IPs[0].Address.String() != "10.244.0.2/32" {
		t.Errorf("result %s", out.String())
	}
	if err := p.Del(&skel.CmdArgs{ContainerID: "abc", IfName: "eth0", StdinData: confFor(sock)}); err != nil {
		t.Fatalf("DEL without netns and pod: %v", err)
	}
	if len(f.reqs) != 2 || f.reqs[0].Command != CommandAdd || f.reqs[0].Pod.Name != "p" || f.reqs[1].Command != CommandDel {
		t.Errorf("agent saw %+v", f.reqs)
	}

	f.err = types.NewError(types.ErrInvalidNetNS, "no such netns", "")
	var cerr *types.Error
	if err := p.Check(args); !errors.As(err, &cerr) || cerr.Code != types.ErrInvalidNetNS {
		t.Errorf("CHECK error = %v, want the agent's code %d", err, types.ErrInvalidNetNS)
	}
	f.err = errors.New("boom")
	if err := p.Del(args); !errors.As(err, &cerr) || cerr.Code != types.ErrInternal || !strings.Contains(cerr.Msg, "boom") {
		t.Errorf("DEL error = %v, want ErrInternal carrying the message", err)
	}
}

func TestAgentUnreachable(t *testing.T) {
	p := &Plugin{Stdout: &bytes.Buffer{}}
	err := p.Add(&skel.CmdArgs{ContainerID: "abc", Netns: "/run/netns/x", IfName: "eth0",
		Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", StdinData: confFor(filepath.Join(t.TempDir(), "none.sock"))})
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrTryAgainLater {
		t.Fatalf("error = %v, want ErrTryAgainLater", err)
	}
}

// validCodes are the codes the plugin may return without reaching an agent.
var validCodes = map[uint]bool{
	types.ErrDecodingFailure: true, types.ErrInvalidNetworkConfig: true,
	types.ErrInvalidEnvironmentVariables: true, types.ErrTryAgainLater: true,
}

// FuzzPlugin feeds arbitrary configurations and arguments to the plugin's
// ADD, DEL and CHECK (with no agent listening): every outcome must be a CNI
// error with a documented code, never a panic.
func FuzzPlugin(f *testing.F) {
	f.Add([]byte(goodConf), "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", "abc", "eth0", "/run/netns/x")
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","agentSocket":"/s","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.2/32","interface":0}]}}`), "IgnoreUnknown=1", "c", "eth0", "")
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","agentSocket":"/s","timeoutSeconds":5,"dns":{"nameservers":["1.1.1.1"]}}`), "A=B=C", "", "verylonginterfacename", "ns")
	f.Add([]byte(`null`), ";;", "x", "e", "n")
	f.Fuzz(func(t *testing.T, conf []byte, args, containerID, ifName, netns string) {
		if _, err := ParseConfig(conf); err != nil && !validCodes[err.Code] {
			t.Fatalf("ParseConfig code %d: %v", err.Code, err)
		}
		for _, require := range []bool{false, true} {
			if _, err := ParseArgs(args, require); err != nil && !validCodes[err.Code] {
				t.Fatalf("ParseArgs code %d: %v", err.Code, err)
			}
		}
		// Point any socket at a directory where nothing listens.
		var m map[string]any
		if json.Unmarshal(conf, &m) == nil && m != nil {
			if _, ok := m["agentSocket"].(string); ok {
				m["agentSocket"] = "/nonexistent-nodemesh-fuzz/cni.sock"
				conf, _ = json.Marshal(m)
			}
		}
		p := &Plugin{Stdout: &bytes.Buffer{}}
		cmd := &skel.CmdArgs{ContainerID: containerID, Netns: netns, IfName: ifName, Args: args, StdinData: conf}
		for _, run := range []func(*skel.CmdArgs) error{p.Add, p.Del, p.Check} {
			err := run(cmd)
			var cerr *types.Error
			if err == nil {
				t.Fatalf("succeeded without an agent: conf %q", conf)
			}
			if !errors.As(err, &cerr) || !validCodes[cerr.Code] {
				t.Fatalf("error %v (%T) is not a CNI error with a documented code", err, err)
			}
		}
	})
}
