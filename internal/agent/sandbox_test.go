package agent

import "testing"

// TestWorkDirInside: the workspace is shown at the client's path unless
// that path would cover the runtime, the sandbox's own folders (/.hac,
// where its account files are written) or the job's other folders.
func TestWorkDirInside(t *testing.T) {
	for cwd, want := range map[string]string{
		"/home/ubuntu/proj": "/home/ubuntu/proj", "/tmp/run1": "/tmp/run1", "/data/x": "/data/x",
		"/": jobWork, "": jobWork, "relative": jobWork, "/home/ubuntu/../x": jobWork,
		"/usr/local/src": jobWork, "/etc": jobWork, "/proc/1": jobWork, "/dev/shm": jobWork, "/run/x": jobWork,
		"/.hac": jobWork, "/.hac/x": jobWork, "/.old": jobWork, "/tmp": jobWork, "/home": jobWork, "/home/hac-job": jobWork,
	} {
		if got := workDirInside(cwd); got != want {
			t.Errorf("workDirInside(%q) = %q, want %q", cwd, got, want)
		}
	}
}

// TestOverlayUpperFS: the workspace overlay is not used on a file system
// it does not work on (a copy then). (Which one the test's own folder is
// on depends on the machine.)
func TestOverlayUpperFS(t *testing.T) {
	if fs, ok := overlayUpperFS("/proc"); ok {
		t.Errorf("/proc (%s) would hold a job's writes", fs)
	}
}
