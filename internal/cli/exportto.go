package cli

import (
	"github.com/spf13/pflag"

	"github.com/nodemesh/nodemesh/translate/istio"
)

// meshExportTo are the mesh config's default exportTo values, as flags of
// the commands that translate (controller, translate).
type meshExportTo struct {
	virtualService, destinationRule, service []string
}

func (m *meshExportTo) add(f *pflag.FlagSet) {
	f.StringSliceVar(&m.virtualService, "default-virtual-service-export-to", nil, "meshConfig.defaultVirtualServiceExportTo: exportTo of VirtualServices that set none (. or *; unset: *)")
	f.StringSliceVar(&m.destinationRule, "default-destination-rule-export-to", nil, "meshConfig.defaultDestinationRuleExportTo: exportTo of DestinationRules that set none (. or *; unset: *)")
	f.StringSliceVar(&m.service, "default-service-export-to", nil, "meshConfig.defaultServiceExportTo: exportTo of Services without the networking.istio.io/exportTo annotation (. or *; unset: *)")
}

// apply validates the flags and sets them on the translator's options.
func (m *meshExportTo) apply(o *istio.Options) error {
	for _, v := range [][]string{m.virtualService, m.destinationRule, m.service} {
		if err := istio.ValidateMeshExportTo(v); err != nil {
			return UsageError("%v", err)
		}
	}
	o.DefaultVirtualServiceExportTo, o.DefaultDestinationRuleExportTo, o.DefaultServiceExportTo = m.virtualService, m.destinationRule, m.service
	return nil
}
