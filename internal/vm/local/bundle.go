package local

import (
	"os"
	"path/filepath"

	hacimage "github.com/hac-project/hac/internal/image"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// capabilities a server's processes keep: what sshd (privilege separation,
// pseudo-terminals, port 22) and a login session need; fewer than container
// runtimes grant by default (no CAP_MKNOD, CAP_NET_RAW, CAP_SETFCAP,
// CAP_SETPCAP, CAP_FSETID).
var capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// serverPids bounds a server's processes and threads.
const serverPids = 8192

// deniedSyscalls are refused (EPERM) inside servers: those the default
// seccomp profile of container engines leaves out (kernel modules and
// kexec, keyrings, BPF, perf, userfaultfd, clock and swap changes, mount
// and namespace manipulation, raw I/O ports, handle-based opens, reboot).
// It is a deny list over the same set, so that programs built for newer
// kernels are not refused syscalls the list does not know.
var deniedSyscalls = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module", "finit_module",
	"fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module", "ioperm", "iopl", "kcmp",
	"kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
	"nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root", "query_module",
	"quotactl", "reboot", "request_key", "setdomainname", "sethostname", "settimeofday", "setns",
	"swapoff", "swapon", "syslog", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
	"vhangup", "vm86", "vm86old",
}

func seccompProfile() *specs.LinuxSeccomp {
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32, specs.ArchAARCH64, specs.ArchARM},
		Syscalls:      []specs.LinuxSyscall{{Names: deniedSyscalls, Action: specs.ActErrno}},
	}
}

// ociSpec is the runtime configuration of one server, in a user
// namespace whose root is the host's idBase (userns.go).
func ociSpec(id, hostname, image, netnsPath, rootfs, runDir string, cpus int, memMiB int64, idBase int) *specs.Spec {
	binDir := filepath.Join(runDir, "bin")
	period := uint64(100000)
	quota := int64(cpus) * int64(period)
	mem := memMiB << 20
	pids := int64(serverPids)
	caps := &specs.LinuxCapabilities{Bounding: capabilities, Effective: capabilities, Permitted: capabilities}
	spec := &specs.Spec{
		Version:  specs.Version,
		Hostname: hostname,
		Root:     &specs.Root{Path: rootfs},
		Process: &specs.Process{
			Args:            []string{"/bin/sh", "-c", "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e"},
			Cwd:             "/",
			Env:             []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"},
			Capabilities:    caps,
			NoNewPrivileges: true,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			// sysfs cannot be mounted from a user namespace that does not own
			// the network namespace (made by the driver): the host's, read-only
			// all the way down, with what tells of other servers masked.
			{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "rro", "nosuid", "noexec", "nodev"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: "/hac-servers/" + id,
			Resources: &specs.LinuxResources{
				CPU:     &specs.LinuxCPU{Quota: &quota, Period: &period},
				Memory:  &specs.LinuxMemory{Limit: &mem},
				Pids:    &specs.LinuxPids{Limit: &pids},
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Seccomp:     seccompProfile(),
			UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: uint32(idBase), Size: idRange}},
			GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: uint32(idBase), Size: idRange}},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.UserNamespace}, {Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: netnsPath},
			},
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
				"/sys/fs/cgroup", "/sys/class/net", "/sys/devices/virtual/net", "/sys/kernel/debug", "/sys/kernel/tracing",
				"/sys/kernel/security", "/sys/fs/bpf"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	if sharesHostUsr(image) {
		for _, p := range hacimage.HostPaths {
			if _, err := os.Stat(p); err == nil {
				spec.Mounts = append(spec.Mounts, specs.Mount{Destination: p, Type: "bind", Source: p, Options: []string{"rbind", "ro", "nosuid", "nodev"}})
			}
		}
	}
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/usr/local/bin", Type: "bind", Source: binDir, Options: []string{"bind", "ro", "nosuid", "nodev"}})
	if idBase >= 0 {
		spec.Mounts = append(spec.Mounts, layerMount(runDir))
	}
	return spec
}

// LayerPath is where a server sees its own writable layer, read-only: the
// files its users added or changed over the image, and whiteouts (0:0
// character devices) for the image's files they deleted. hac run ships it
// to the GPU node (docs/decisions/0007).
const LayerPath = "/.hac/layer"

func layerMount(runDir string) specs.Mount {
	return specs.Mount{Destination: LayerPath, Type: "bind", Source: filepath.Join(runDir, "layer"), Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}}
}
