package workloadcert

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// refused tells a CA's answer from a transport failure: istiod answers
// Unauthenticated for every authentication and impersonation refusal
// (opaque on purpose), InvalidArgument/PermissionDenied for bad requests.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
		return true
	}
	return false
}
