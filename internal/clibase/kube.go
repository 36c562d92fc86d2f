package clibase

import (
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// UserAgent is what RestConfig sends the API server (NewRoot sets it to the
// binary's name and version).
var UserAgent = "nodemesh"

// KubeFlags are kubectl's connection flags.
type KubeFlags struct {
	Kubeconfig string
	Context    string
}

// Add registers --kubeconfig and --context.
func (k *KubeFlags) Add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&k.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster service account)")
	cmd.Flags().StringVar(&k.Context, "context", "", "the kubeconfig context to use (default: the current context)")
}

// Loader is kubectl's kubeconfig resolution with the flags applied.
func (k *KubeFlags) Loader() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.Kubeconfig != "" {
		rules.ExplicitPath = k.Kubeconfig
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.Context})
}

// RestConfig resolves the API server connection; without a kubeconfig it
// falls back to the in-cluster configuration.
func (k *KubeFlags) RestConfig() (*rest.Config, error) {
	cfg, err := k.Loader().ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = UserAgent
	return cfg, nil
}
