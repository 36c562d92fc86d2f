package install

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	c, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		set  []string
		file string
		want []string // problems, exactly
	}{
		"defaults":              {},
		"a valid change":        {set: []string{"controller.replicas=3", "envoy.image.tag=v1.36.4", "controller.goMemLimit=250MiB"}},
		"bad soft limit":        {set: []string{"controller.goMemLimit=250M"}, want: []string{"controller.goMemLimit: '250M' does not match pattern '^([0-9]+(B|KiB|MiB|GiB|TiB)?)?$'"}},
		"mistyped key":          {set: []string{"controller.replica=2"}, want: []string{"controller.replica: unknown key (did you mean controller.replicas?)"}},
		"unknown top-level key": {set: []string{"agnet.logLevel=debug"}, want: []string{"agnet: unknown key (did you mean agent?)"}},
		"wrong type":            {set: []string{"controller.replicas=three"}, want: []string{"controller.replicas: got string, want integer"}},
		"not in the enum":       {set: []string{"envoy.image.pullPolicy=Sometimes"}, want: []string{"envoy.image.pullPolicy: value must be one of 'Always', 'IfNotPresent', 'Never'"}},
		"port taken by envoy":   {set: []string{"agent.metricsPort=15001"}, want: []string{"agent.metricsPort: got 15001, want a port not used by Envoy or the controller on the host network (15000, 15001, 15006, 15008, 15010, 15014, 15090 are taken)"}},
		"vxlan routing":         {set: []string{"agent.routingMode=vxlan", "agent.vxlan.port=4789", "agent.vxlan.vni=7", "agent.mtu=9000", "agent.uplinks={eth0,bond0.100}"}},
		"not an interface name": {set: []string{"agent.uplinks={eth0/x}"}, want: []string{`agent.uplinks.0: 'eth0/x' does not match pattern '^[^/:\\s]{1,15}$'`}},
		"unknown routing mode":  {set: []string{"agent.routingMode=bgp"}, want: []string{"agent.routingMode: value must be one of 'native', 'vxlan', 'none'"}},
		"VNI out of range":      {set: []string{"agent.vxlan.vni=16777216"}, want: []string{"agent.vxlan.vni: got 16777216, want a VXLAN network identifier, 1 to 16777215"}},
		"MTU too small":         {set: []string{"agent.mtu=500"}, want: []string{"agent.mtu: got 500, want 0 (the uplinks' MTU, less 50 in vxlan mode) or 576 to 65535"}},
		"chained CNI mode":      {set: []string{"agent.cni.mode=chained", "agent.routingMode=none"}},
		"unknown CNI mode":      {set: []string{"agent.cni.mode=exclusive"}, want: []string{"agent.cni.mode: value must be one of 'standalone', 'chained'"}},
		"relative host path":    {set: []string{"agent.cni.binDir=opt/cni/bin"}, want: []string{"agent.cni.binDir: 'opt/cni/bin' does not match pattern '^/'"}},
		"bad quantity":          {set: []string{"controller.resources.limits.memory=lots"}, want: []string{`controller.resources.limits.memory: got "lots", want a Kubernetes quantity such as 100m, 256Mi or 2`}},
		"two problems at once":  {set: []string{"controller.replicas=-1", "envoy.concurency=4"}, want: []string{"controller.replicas: minimum: got -1, want 0", "envoy.concurency: unknown key (did you mean envoy.concurrency?)"}},
		"from a file":           {file: "agent:\n  tolerations:\n    - operator: Sometimes\n", want: []string{"agent.tolerations.0.operator: value must be one of 'Exists', 'Equal'"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := ValueOptions{Values: tc.set}
			if tc.file != "" {
				p := filepath.Join(t.TempDir(), "values.yaml")
				if err := os.WriteFile(p, []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
				o.ValueFiles = []string{p}
			}
			vals, err := UserValues(o)
			if err != nil {
				t.Fatal(err)
			}
			err = Validate(c, vals)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ve *ValuesError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidValues) {
				t.Fatalf("want a ValuesError, got %v", err)
			}
			if strings.Join(ve.Problems, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("problems:\n  %s\nwant:\n  %s", strings.Join(ve.Problems, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}
