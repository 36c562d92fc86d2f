// Package identity derives a pod's security identity from its namespace,
// service account and labels, and allocates its number through the
// Kubernetes API (the cluster-scoped identities.nodemesh.io resource), so
// that every node of the cluster uses the same number for the same label
// set. The scheme is described in docs/design/identity.md.
//
// The package uses client-go's dynamic client and api/v1alpha1 (the
// resource and its label); it must not import the bpf package's loaders
// (only its Identity type) or anything of the translator.
package identity

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/bpf"
)

// Range of the numbers allocated through the API: from the first number the
// datapath lets the agent allocate up to the node-local CIDR identities.
const (
	First bpf.Identity = bpf.IdentityFirstAllocated
	Limit bpf.Identity = 1 << 24
)

// maxProbes bounds the probe sequence; with 16 million numbers and a good
// hash, needing more than a few means something is wrong.
const maxProbes = 64

// ignoredLabels differ between pods of one workload (or change on every
// rollout) without saying anything about who the pod is; keeping them would
// give every pod or every rollout an identity of its own.
var ignoredLabels = map[string]bool{
	"pod-template-hash":                        true,
	"controller-revision-hash":                 true,
	"pod-template-generation":                  true,
	"controller-uid":                           true,
	"batch.kubernetes.io/controller-uid":       true,
	"statefulset.kubernetes.io/pod-name":       true,
	"apps.kubernetes.io/pod-index":             true,
	"batch.kubernetes.io/job-completion-index": true,
}

// IgnoredLabel reports whether a pod label is left out of identities.
func IgnoredLabel(key string) bool { return ignoredLabels[key] }

// Key is what an identity stands for.
type Key struct {
	Namespace      string            `json:"namespace"`
	ServiceAccount string            `json:"serviceAccount,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
}

// KeyOf is the key of a pod: its namespace, service account ("default" when
// empty, as the API server sets it) and labels without the ignored ones.
func KeyOf(namespace, serviceAccount string, podLabels map[string]string) Key {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	k := Key{Namespace: namespace, ServiceAccount: serviceAccount, Labels: map[string]string{}}
	for l, v := range podLabels {
		if !ignoredLabels[l] {
			k.Labels[l] = v
		}
	}
	return k
}

// String is the canonical form: namespace, service account and the labels
// sorted by key, each length-prefixed so that no two keys share a form.
func (k Key) String() string {
	keys := make([]string, 0, len(k.Labels))
	for l := range k.Labels {
		keys = append(keys, l)
	}
	sort.Strings(keys)
	var b strings.Builder
	put := func(s string) { fmt.Fprintf(&b, "%d:%s;", len(s), s) }
	put(k.Namespace)
	put(k.ServiceAccount)
	for _, l := range keys {
		put(l)
		put(k.Labels[l])
	}
	return b.String()
}

// Hash is the SHA-256 of the canonical form, hex, cut to 63 characters (a
// label value).
func (k Key) Hash() string {
	sum := sha256.Sum256([]byte(k.String()))
	return hex.EncodeToString(sum[:])[:63]
}

// Equal reports whether two keys are the same.
func (k Key) Equal(o Key) bool {
	return k.Namespace == o.Namespace && k.ServiceAccount == o.ServiceAccount && maps.Equal(k.Labels, o.Labels)
}

// Candidate is the attempt-th number probed for a key: a hash of the key's
// hash and the attempt, in [First, Limit). Every node computes the same
// sequence, so agents racing for one key converge on one object.
func Candidate(hash string, attempt int) bpf.Identity {
	h := sha256.New()
	h.Write([]byte(hash))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(attempt))
	h.Write(n[:])
	v := binary.BigEndian.Uint32(h.Sum(nil))
	return First + bpf.Identity(v%uint32(Limit-First))
}

// Identity is an allocated identity.
type Identity struct {
	ID  bpf.Identity
	Key Key
}

// FromObject reads an Identity object; ok is false for objects that are not
// valid identities (their numbers are still taken).
func FromObject(u *unstructured.Unstructured) (Identity, bool) {
	n, err := strconv.ParseUint(u.GetName(), 10, 32)
	if err != nil || bpf.Identity(n) < First || bpf.Identity(n) >= Limit {
		return Identity{}, false
	}
	ns, _, _ := unstructured.NestedString(u.Object, "spec", "namespace")
	sa, _, _ := unstructured.NestedString(u.Object, "spec", "serviceAccount")
	lbls, _, _ := unstructured.NestedStringMap(u.Object, "spec", "labels")
	if ns == "" {
		return Identity{}, false
	}
	if lbls == nil {
		lbls = map[string]string{}
	}
	return Identity{ID: bpf.Identity(n), Key: Key{Namespace: ns, ServiceAccount: sa, Labels: lbls}}, true
}

// Object is the Identity object of number id for key k, as allocation
// creates it.
func Object(id bpf.Identity, k Key) *unstructured.Unstructured {
	lbls := map[string]any{}
	for l, v := range k.Labels {
		lbls[l] = v
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       v1alpha1.IdentityKind,
		"metadata": map[string]any{
			"name":   strconv.FormatUint(uint64(id), 10),
			"labels": map[string]any{v1alpha1.IdentityKeyHashLabel: k.Hash()},
		},
		"spec": map[string]any{
			"namespace":      k.Namespace,
			"serviceAccount": k.ServiceAccount,
			"labels":         lbls,
		},
	}}
}

// Allocator allocates identities through the API.
type Allocator struct {
	Client dynamic.Interface
	// Known, if set, answers from a local cache (an informer's) before the
	// API is asked.
	Known func(hash string) []Identity
}

// ErrExhausted is returned when the probe sequence of a key is used up.
var ErrExhausted = errors.New("identity probe sequence exhausted")

// Allocate returns the number of k, creating its Identity object if no
// agent has yet.
func (a *Allocator) Allocate(ctx context.Context, k Key) (bpf.Identity, error) {
	hash := k.Hash()
	if a.Known != nil {
		if id, ok := lowest(a.Known(hash), k); ok {
			return id, nil
		}
	}
	res := a.Client.Resource(v1alpha1.IdentityResource)
	list, err := res.List(ctx, metav1.ListOptions{LabelSelector: v1alpha1.IdentityKeyHashLabel + "=" + hash})
	if err != nil {
		return 0, fmt.Errorf("list identities of %s: %w", hash, err)
	}
	var found []Identity
	for i := range list.Items {
		if id, ok := FromObject(&list.Items[i]); ok {
			found = append(found, id)
		}
	}
	if id, ok := lowest(found, k); ok {
		return id, nil
	}
	for attempt := range maxProbes {
		id := Candidate(hash, attempt)
		_, err := res.Create(ctx, Object(id, k), metav1.CreateOptions{})
		if err == nil {
			return id, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return 0, fmt.Errorf("create identity %d: %w", id, err)
		}
		existing, err := res.Get(ctx, strconv.FormatUint(uint64(id), 10), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			// Deleted meanwhile: try the same number again.
			if _, err := res.Create(ctx, Object(id, k), metav1.CreateOptions{}); err == nil {
				return id, nil
			}
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("get identity %d: %w", id, err)
		}
		if other, ok := FromObject(existing); ok && other.Key.Equal(k) {
			return id, nil // another agent won the race for this key
		}
		// Taken by another key: probe on.
	}
	return 0, fmt.Errorf("%w for %s after %d attempts", ErrExhausted, hash, maxProbes)
}

// Lookup finds the number of key k among known identities (an informer's)
// without allocating: what a node uses for pods another node owns. Several
// numbers can exist for one key after a lost race with a deleted object;
// the lowest is the one every node picks.
func Lookup(known []Identity, k Key) (bpf.Identity, bool) { return lowest(known, k) }

// lowest is the smallest number among ids whose key equals k (several can
// exist after a lost race with a deleted object; any of them is correct,
// the lowest is chosen so nodes agree).
func lowest(ids []Identity, k Key) (bpf.Identity, bool) {
	var best bpf.Identity
	for _, id := range ids {
		if id.Key.Equal(k) && (best == 0 || id.ID < best) {
			best = id.ID
		}
	}
	return best, best != 0
}
