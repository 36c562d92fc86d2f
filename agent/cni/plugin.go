package cni

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Plugin is the CNI plugin's command functions.
type Plugin struct {
	// Stdout receives ADD's result.
	Stdout io.Writer
}

// Main runs the plugin as the CNI runtime invoked it (environment and stdin)
// and returns the process exit code. VERSION is answered by skel.
func Main() int {
	p := &Plugin{Stdout: os.Stdout}
	if err := skel.PluginMainFuncsWithError(skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check},
		version.PluginSupports(SupportedVersions...), "nodemesh-cni: pod networking by the nodemesh agent"); err != nil {
		if perr := err.Print(); perr != nil {
			os.Stderr.WriteString("nodemesh-cni: " + err.Error() + "\n")
		}
		return 1
	}
	return 0
}

// request validates a call and builds what is sent to the agent.
func request(command string, args *skel.CmdArgs) (*NetConf, *Request, *types.Error) {
	conf, cerr := ParseConfig(args.StdinData)
	if cerr != nil {
		return nil, nil, cerr
	}
	pod, perr := ParseArgs(args.Args, command == CommandAdd)
	if perr != nil {
		return nil, nil, perr
	}
	if args.ContainerID == "" || len(args.ContainerID) > 256 {
		return nil, nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID is empty or too long", "")
	}
	if args.IfName == "" || len(args.IfName) > 15 {
		return nil, nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME must be 1 to 15 characters", args.IfName)
	}
	if command != CommandDel && args.Netns == "" {
		return nil, nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty", "")
	}
	return conf, &Request{
		Command: command, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		Pod: pod, Config: args.StdinData,
	}, nil
}

func (c *NetConf) timeout() time.Duration {
	if c.TimeoutSeconds > 0 {
		return time.Duration(c.TimeoutSeconds) * time.Second
	}
	return 30 * time.Second
}

func (p *Plugin) call(command string, args *skel.CmdArgs) (*NetConf, *Response, error) {
	conf, req, cerr := request(command, args)
	if cerr != nil {
		return nil, nil, cerr
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout())
	defer cancel()
	res, err := Call(ctx, conf.AgentSocket, req)
	if err != nil {
		return conf, nil, err
	}
	return conf, &Response{Result: res}, nil
}

// Add forwards ADD and prints the agent's result in the configuration's
// CNI version.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, resp, err := p.call(CommandAdd, args)
	if err != nil {
		return err
	}
	if resp.Result == nil {
		return types.NewError(types.ErrInternal, "the nodemesh agent returned no result", "")
	}
	out, err := resp.Result.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "convert result", err.Error())
	}
	if err := out.PrintTo(p.Stdout); err != nil {
		return types.NewError(types.ErrIOFailure, "print result", err.Error())
	}
	return nil
}

// Del forwards DEL. The agent makes it idempotent.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	_, _, err := p.call(CommandDel, args)
	return err
}

// Check forwards CHECK.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	_, _, err := p.call(CommandCheck, args)
	return err
}
