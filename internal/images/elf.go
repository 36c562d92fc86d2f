package images

import (
	"debug/elf"
	"fmt"
)

// isStatic reports whether the ELF program at p is statically linked: it
// has no program interpreter (PT_INTERP) to load shared libraries.
func isStatic(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", p, err)
	}
	defer f.Close()
	return staticELF(f), nil
}

func staticELF(f *elf.File) bool {
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}
