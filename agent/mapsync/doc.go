// Package mapsync brings the agent's policy maps (identities, policy
// entries, endpoints, local endpoints) from the state they hold to the state
// the agent wants, as a pure plan of ordered writes applied through a
// narrow interface (Maps) that *bpf.Policy implements and tests fake.
//
// The kernel decides packets while the writes happen one by one (a batch
// update is not atomic either), so the plan's order is the point of the
// package: no intermediate state allows a flow that neither the old nor the
// new state allows. The plan has four phases (docs/design/policy.md §8):
//
//  1. Restrict — changes that can only deny more while addresses and
//     endpoints keep their old identities: new deny entries, allow→deny,
//     removed allow entries, isolation flags an endpoint gains; and every
//     change to an entry no old endpoint or address uses (inert until the
//     switch, then complete).
//  2. Switch — the attribution changes: identity-map puts and deletes, new,
//     deleted and re-identified endpoints and local endpoints (with the
//     union of their old and new isolation). Entries live before and after
//     hold only what both states allow.
//  3. Relax — changes that can only allow more under the new attribution,
//     and every change to an entry only the old attribution used.
//  4. Finalize — endpoints' final isolation flags and new policy revisions,
//     last, so established flows are decided again against the final
//     entries.
//
// The package is plain data in, plain data out (it imports bpf for the map
// types only) and never touches a map itself except in Apply.
package mapsync
