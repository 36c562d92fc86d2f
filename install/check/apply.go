package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"text/template"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
)

// appliedObject is a resource a test created, to delete afterwards.
type appliedObject struct {
	gvr             schema.GroupVersionResource
	namespace, name string
}

// apply renders a test's manifests with the Env and creates them. It
// returns what it created, even on error, so that it can be removed.
func (s *Suite) apply(ctx context.Context, env *Env, manifests string) ([]appliedObject, error) {
	tmpl, err := template.New("resources").Option("missingkey=error").Parse(manifests)
	if err != nil {
		return nil, fmt.Errorf("test resources: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, env); err != nil {
		return nil, fmt.Errorf("test resources: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(s.Kube.Discovery()))
	dec := utilyaml.NewYAMLOrJSONDecoder(&buf, 4096)
	var created []appliedObject
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return created, fmt.Errorf("decode test resource: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return created, fmt.Errorf("%s: %w", gvk.Kind, err)
		}
		var ri = s.Dynamic.Resource(m.Resource)
		ns := ""
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns = obj.GetNamespace()
			if ns == "" {
				ns = env.Namespace
				obj.SetNamespace(ns)
			}
			if _, err := ri.Namespace(ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
				return created, fmt.Errorf("create %s %s/%s: %w", gvk.Kind, ns, obj.GetName(), err)
			}
		} else if _, err := ri.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return created, fmt.Errorf("create %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		created = append(created, appliedObject{gvr: m.Resource, namespace: ns, name: obj.GetName()})
	}
	return created, nil
}

// remove deletes what apply created, newest first.
func (s *Suite) remove(ctx context.Context, objs []appliedObject) error {
	var errs []error
	for i := len(objs) - 1; i >= 0; i-- {
		o := objs[i]
		var err error
		if o.namespace != "" {
			err = s.Dynamic.Resource(o.gvr).Namespace(o.namespace).Delete(ctx, o.name, metav1.DeleteOptions{})
		} else {
			err = s.Dynamic.Resource(o.gvr).Delete(ctx, o.name, metav1.DeleteOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
