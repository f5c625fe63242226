package client_test

import (
	"testing"

	hacv1 "github.com/hac-project/hac/gen/hac/v1"
	"github.com/hac-project/hac/internal/client"
	"github.com/hac-project/hac/internal/store"
)

// The client reads the states the control plane keeps.
func TestJobStatesAsStored(t *testing.T) {
	for _, s := range store.JobStates {
		j := &hacv1.Job{State: string(s)}
		if client.Ended(j) != s.Ended() {
			t.Errorf("%s: Ended %v, the store says %v", s, client.Ended(j), s.Ended())
		}
		if client.Running(j) != (s == store.JobRunning) {
			t.Errorf("%s: Running %v", s, client.Running(j))
		}
	}
}
