package lbsync

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/nodemesh/nodemesh/bpf"
)

// OpKind is the map and the operation of a write.
type OpKind uint8

// Kinds of writes, in the order a plan makes them (package doc).
const (
	PutBackend OpKind = iota + 1
	PutSlot
	PutMaster
	DeleteSlot
	DeleteMaster
	DeleteBackend
)

// Op is one write: Key and Service for the services map (slot or master),
// ID and Backend for the backends map.
type Op struct {
	Kind    OpKind
	Key     bpf.LBKey
	Service bpf.LBService
	ID      uint32
	Backend bpf.LBBackend
}

// Plan is an ordered list of writes.
type Plan struct {
	Ops []Op
}

// NewPlan computes the writes that bring the maps from have to want. A
// backend keeps the id it has (so unchanged slots are not rewritten); a new
// one gets the lowest free id. At every point of the plan, a slot the
// programs can reach (1..count of its frontend's master) names a backend
// that is in the map and that the frontend had or will have. An unchanged
// state gives an empty plan.
func NewPlan(have State, want Want) Plan {
	var p Plan
	add := func(op Op) { p.Ops = append(p.Ops, op) }

	// Ids of the backends in the map; a backend written twice under two
	// ids keeps the lowest (the other goes with the unreferenced ones).
	ids := map[Backend]uint32{}
	for _, id := range sortedIDs(have.Backends) {
		b := backendOf(have.Backends[id])
		if _, ok := ids[b]; !ok {
			ids[b] = id
		}
	}
	used := map[uint32]bool{}
	for id := range have.Backends {
		used[id] = true
	}
	next := uint32(1)
	referenced := map[uint32]bool{}
	frontends := sortedFrontends(want)
	for _, f := range frontends {
		for _, b := range want[f] {
			id, ok := ids[b]
			if !ok {
				for used[next] {
					next++
				}
				id = next
				used[id] = true
				ids[b] = id
				add(Op{Kind: PutBackend, ID: id, Backend: b.value()})
			}
			referenced[id] = true
		}
	}

	// The slots each frontend has now.
	haveSlots := map[Frontend][]uint16{}
	for k := range have.Services {
		f := frontendOf(k)
		haveSlots[f] = append(haveSlots[f], k.Slot)
	}
	for _, f := range frontends {
		bs := want[f]
		for i, b := range bs {
			k, v := f.key(uint16(i+1)), bpf.LBService{BackendID: ids[b]}
			if cur, ok := have.Services[k]; !ok || cur != v {
				add(Op{Kind: PutSlot, Key: k, Service: v})
			}
		}
		k, v := f.key(0), bpf.LBService{Count: uint16(len(bs))}
		if cur, ok := have.Services[k]; !ok || cur != v {
			add(Op{Kind: PutMaster, Key: k, Service: v})
		}
		slots := haveSlots[f]
		slices.Sort(slots)
		for _, s := range slots {
			if int(s) > len(bs) {
				add(Op{Kind: DeleteSlot, Key: f.key(s)})
			}
		}
	}
	gone := make([]Frontend, 0, len(haveSlots))
	for f := range haveSlots {
		if _, ok := want[f]; !ok {
			gone = append(gone, f)
		}
	}
	slices.SortFunc(gone, compareFrontends)
	for _, f := range gone {
		slots := haveSlots[f]
		slices.Sort(slots) // the master (slot 0) first: the frontend stops being one
		for _, s := range slots {
			kind := DeleteSlot
			if s == 0 {
				kind = DeleteMaster
			}
			add(Op{Kind: kind, Key: f.key(s)})
		}
	}
	for _, id := range sortedIDs(have.Backends) {
		if !referenced[id] {
			add(Op{Kind: DeleteBackend, ID: id})
		}
	}
	return p
}

// Apply performs the plan's writes in order and stops at the first error;
// every prefix of a plan is a consistent state, and the next sync plans
// again from what the maps hold.
func Apply(m Maps, p Plan) error {
	for _, op := range p.Ops {
		var err error
		switch op.Kind {
		case PutBackend:
			err = m.PutLBBackend(op.ID, op.Backend)
		case PutSlot, PutMaster:
			err = m.PutLBService(op.Key, op.Service)
		case DeleteSlot, DeleteMaster:
			err = m.DeleteLBService(op.Key)
		case DeleteBackend:
			err = m.DeleteLBBackend(op.ID)
		default:
			err = fmt.Errorf("unknown write kind %d", op.Kind)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// String renders a write for logs and tests.
func (op Op) String() string {
	f := frontendOf(op.Key)
	switch op.Kind {
	case PutBackend:
		return fmt.Sprintf("put backend %d = %s", op.ID, backendOf(op.Backend))
	case PutSlot:
		return fmt.Sprintf("put slot %s #%d = backend %d", f, op.Key.Slot, op.Service.BackendID)
	case PutMaster:
		return fmt.Sprintf("put frontend %s = %d slots", f, op.Service.Count)
	case DeleteSlot:
		return fmt.Sprintf("delete slot %s #%d", f, op.Key.Slot)
	case DeleteMaster:
		return fmt.Sprintf("delete frontend %s", f)
	case DeleteBackend:
		return fmt.Sprintf("delete backend %d", op.ID)
	}
	return fmt.Sprintf("unknown write kind %d", op.Kind)
}

// Lines renders the plan, one line per write.
func (p Plan) Lines() []string {
	out := make([]string, 0, len(p.Ops))
	for _, op := range p.Ops {
		out = append(out, op.String())
	}
	return out
}

func sortedIDs(m map[uint32]bpf.LBBackend) []uint32 {
	out := make([]uint32, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func compareFrontends(a, b Frontend) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Proto, b.Proto))
}

func sortedFrontends(w Want) []Frontend {
	out := make([]Frontend, 0, len(w))
	for f := range w {
		out = append(out, f)
	}
	slices.SortFunc(out, compareFrontends)
	return out
}
