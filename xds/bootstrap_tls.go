package xds

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpccredentialv3 "github.com/envoyproxy/go-control-plane/envoy/config/grpc_credential/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// secureADS is the ADS service of a node Envoy: Google gRPC to the
// controller over TLS (verified with CAFile for ServerName), the token of
// TokenFile sent as "authorization: Bearer" on every stream.
func secureADS(o BootstrapOptions, host string) (*corev3.GrpcService, error) {
	if o.TokenFile == "" || o.CAFile == "" {
		return nil, errors.New("the controller serves xDS over TLS to clients with a token: the token file and the CA file are required (or an insecure bootstrap for a plaintext controller)")
	}
	for _, f := range []string{o.TokenFile, o.CAFile} {
		if !filepath.IsAbs(f) {
			return nil, fmt.Errorf("%q: give an absolute path (Envoy reads it, from its own working directory)", f)
		}
	}
	serverName := o.ServerName
	if serverName == "" {
		if _, err := netip.ParseAddr(host); err == nil {
			return nil, fmt.Errorf("the controller address %s is an IP address: give the name its certificate is verified for (the controller's Service, e.g. nodemesh-controller.nodemesh-system.svc)", host)
		}
		serverName = host
	}
	token, err := anypb.New(&grpccredentialv3.FileBasedMetadataConfig{
		SecretData:   &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.TokenFile}},
		HeaderKey:    "authorization",
		HeaderPrefix: "Bearer ",
	})
	if err != nil {
		return nil, err
	}
	args := map[string]*corev3.GrpcService_GoogleGrpc_ChannelArgs_Value{
		// As the envoy_grpc cluster's HTTP/2 keepalives: a dead connection
		// is noticed in 40 s.
		"grpc.keepalive_time_ms":    intArg(30000),
		"grpc.keepalive_timeout_ms": intArg(10000),
		// gRPC's default limit is 4 MiB; one response of a large mesh
		// (every cluster of the node) is bigger. -1: unlimited, as
		// envoy_grpc.
		"grpc.max_receive_message_length": intArg(-1),
	}
	if serverName != host {
		args["grpc.ssl_target_name_override"] = &corev3.GrpcService_GoogleGrpc_ChannelArgs_Value{
			ValueSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelArgs_Value_StringValue{StringValue: serverName},
		}
	}
	return &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{
		TargetUri:  o.Controller,
		StatPrefix: XDSClusterName,
		ChannelCredentials: &corev3.GrpcService_GoogleGrpc_ChannelCredentials{
			CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelCredentials_SslCredentials{SslCredentials: &corev3.GrpcService_GoogleGrpc_SslCredentials{
				RootCerts: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.CAFile}},
			}},
		},
		// The file-based metadata factory builds the channel credentials
		// above and adds the plugin's call credentials.
		CredentialsFactoryName: FileBasedMetadata,
		CallCredentials: []*corev3.GrpcService_GoogleGrpc_CallCredentials{{
			CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_CallCredentials_FromPlugin{FromPlugin: &corev3.GrpcService_GoogleGrpc_CallCredentials_MetadataCredentialsFromPlugin{
				Name:       FileBasedMetadata,
				ConfigType: &corev3.GrpcService_GoogleGrpc_CallCredentials_MetadataCredentialsFromPlugin_TypedConfig{TypedConfig: token},
			}},
		}},
		ChannelArgs: &corev3.GrpcService_GoogleGrpc_ChannelArgs{Args: args},
	}}}, nil
}

func intArg(v int64) *corev3.GrpcService_GoogleGrpc_ChannelArgs_Value {
	return &corev3.GrpcService_GoogleGrpc_ChannelArgs_Value{ValueSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelArgs_Value_IntValue{IntValue: v}}
}

// validateSecureADS checks what Envoy would only find at runtime: TLS with
// root certificates from a file, and the token plugin with its file and
// header.
func validateSecureADS(g *corev3.GrpcService_GoogleGrpc) error {
	if g.GetTargetUri() == "" {
		return errors.New("bootstrap: the ADS service has no target")
	}
	if g.GetChannelCredentials().GetSslCredentials().GetRootCerts().GetFilename() == "" {
		return errors.New("bootstrap: the ADS service must verify the controller (TLS with root certificates from a file)")
	}
	if g.GetCredentialsFactoryName() != FileBasedMetadata {
		return fmt.Errorf("bootstrap: the ADS service's credentials factory must be %s", FileBasedMetadata)
	}
	for _, cc := range g.GetCallCredentials() {
		p := cc.GetFromPlugin()
		if p.GetName() != FileBasedMetadata {
			continue
		}
		cfg := &grpccredentialv3.FileBasedMetadataConfig{}
		if err := p.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			return fmt.Errorf("bootstrap: %s: %w", FileBasedMetadata, err)
		}
		if err := cfg.ValidateAll(); err != nil {
			return fmt.Errorf("bootstrap: %s: %w", FileBasedMetadata, err)
		}
		if cfg.GetSecretData().GetFilename() == "" || cfg.GetHeaderKey() != "authorization" || cfg.GetHeaderPrefix() != "Bearer " {
			return errors.New(`bootstrap: the ADS token must be read from a file and sent as "authorization: Bearer <token>"`)
		}
		return nil
	}
	return errors.New("bootstrap: the ADS service sends no token (file_based_metadata call credentials)")
}
