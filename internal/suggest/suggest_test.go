package suggest

import "testing"

func TestClosest(t *testing.T) {
	known := []string{"replicas", "resources", "logLevel"}
	for got, want := range map[string]string{
		"replica": "replicas", "REPLICAS": "replicas", "loglevle": "logLevel", "resourcess": "resources",
		"image": "", "": "", string(make([]byte, 100)): "",
	} {
		if c := Closest(got, known); c != want {
			t.Errorf("Closest(%q) = %q, want %q", got, c, want)
		}
	}
}
