package cli

import (
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

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

// loader is kubectl's kubeconfig resolution with the flags applied.
func (k *KubeFlags) loader() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.Kubeconfig != "" {
		rules.ExplicitPath = k.Kubeconfig
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.Context})
}

// RestConfig resolves the API server connection; without a kubeconfig it
// falls back to the in-cluster configuration.
func (k *KubeFlags) RestConfig() (*rest.Config, error) {
	cfg, err := k.loader().ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "nodemesh/" + Version
	return cfg, nil
}
