package kubeauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/kubeauth"
)

// allowDebug gives ServiceAccount ns/sa get services/proxy on the
// controller's Service, as the chart does for api.DebugServiceAccount.
func allowDebug(t *testing.T, c *cluster, sa string) {
	t.Helper()
	ctx := context.Background()
	rbac := c.env.Client.RbacV1()
	if _, err := rbac.Roles(c.ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "debug-" + sa},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"services/proxy"}, ResourceNames: []string{api.ControllerService}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.RoleBindings(c.ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "debug-" + sa},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "debug-" + sa},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: c.ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestDebugAuthorization: /debug/config_dump answers 401 without a debug
// token (or with an xDS token), 403 to a ServiceAccount that may not get
// services/proxy on the controller's Service, and the dump to one that may
// — in the header that survives the API server's proxy or as a bearer
// token. (Through the real service proxy: internal/cli
// TestControllerCommand.)
func TestDebugAuthorization(t *testing.T) {
	c := newCluster(t)
	c.serviceAccount(t, c.ns, api.DebugServiceAccount)
	c.serviceAccount(t, c.ns, "other")
	allowDebug(t, c, api.DebugServiceAccount)
	ctl := c.controller(t, nil)
	auth, err := kubeauth.NewDebug(kubeauth.DebugOptions{Client: c.env.Client, Namespace: c.ns, Service: api.ControllerService})
	if err != nil {
		t.Fatal(err)
	}
	am := xds.NewAuthMetrics(nil)
	srv := httptest.NewServer((&xds.Debug{Cache: ctl.cache, Auth: auth, AuthMetrics: am}).Handler())
	defer srv.Close()
	debugTok := c.tokenFor(t, c.ns, api.DebugServiceAccount, api.DebugAudience, nil)
	otherTok := c.tokenFor(t, c.ns, "other", api.DebugAudience, nil)
	xdsTok := c.token(t, c.ns, "envoy-a", api.XDSAudience)

	for name, tc := range map[string]struct {
		header, token string
		code          int
	}{
		"no token":                 {"", "", 401},
		"a node proxy's xDS token": {"Authorization", "Bearer " + xdsTok, 401},
		"the debug account's token, API audience": {api.DebugTokenHeader, c.tokenFor(t, c.ns, api.DebugServiceAccount, "", nil), 401},
		"an account without the permission":       {api.DebugTokenHeader, otherTok, 403},
		"the debug account, X-Nodemesh-Token":     {api.DebugTokenHeader, debugTok, 200},
		"the debug account, bearer":               {"Authorization", "Bearer " + debugTok, 200},
	} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/debug/config_dump?node="+c.nodeA, nil)
			if tc.header != "" {
				req.Header.Set(tc.header, tc.token)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := http.DefaultClient.Do(req.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("%d, want %d", resp.StatusCode, tc.code)
			}
		})
	}
}
