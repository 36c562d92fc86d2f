package istio

import (
	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// translateFault is Istio's TranslateFault. An unset percentage means 0 %:
// Istio documents "if left unspecified, no request will be delayed/aborted".
// exponentialDelay and http2Error are refused by Istio's validation, and so
// the VirtualService with them (validate_vs.go).
func translateFault(in *networking.HTTPFaultInjection) *ir.Fault {
	if in == nil {
		return nil
	}
	out := &ir.Fault{}
	if d := in.Delay; d != nil {
		if fd := d.GetFixedDelay(); fd != nil {
			out.Delay = &ir.FaultDelay{Fixed: ir.Duration(fd.AsDuration())}
			if d.Percentage != nil {
				out.Delay.Percent = d.Percentage.Value
			} else {
				out.Delay.Percent = float64(d.Percent)
				out.Delay.IntegerPercent = true
			}
		}
	}
	if a := in.Abort; a != nil {
		pct := a.GetPercentage().GetValue()
		switch et := a.ErrorType.(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			out.Abort = &ir.FaultAbort{HTTPStatus: uint32(et.HttpStatus), Percent: pct}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			code := grpcCodes[et.GrpcStatus]
			out.Abort = &ir.FaultAbort{GRPCStatus: &code, Percent: pct}
		}
	}
	if out.Delay == nil && out.Abort == nil {
		return nil
	}
	return out
}
