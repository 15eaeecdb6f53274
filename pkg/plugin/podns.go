package plugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// openPodNS opens CNI_NETNS for ADD and CHECK. It must be a network
// namespace (ns.GetNS refuses a regular file or a directory) and not the
// node's own: an attachment "into" the node would put a pod interface,
// rules and tables into the node's routing.
func openPodNS(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty",
			"pass the path of the pod sandbox's network namespace")
	}
	podNS, err := ns.GetNS(path)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_NETNS %q is not a usable network namespace: %v", path, err),
			"pass the path of the pod sandbox's network namespace (a bind mount of /proc/<pid>/ns/net)")
	}
	node, err := isNodeNS(path)
	if err != nil {
		_ = podNS.Close()
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("cannot tell CNI_NETNS %q from the node's network namespace: %v", path, err), "")
	}
	if node {
		_ = podNS.Close()
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_NETNS %q is the node's own network namespace", path),
			"pass the pod's network namespace; multi-bridge never attaches the node itself")
	}
	return podNS, nil
}

// isNodeNS reports whether the namespace at path is the one the plugin runs
// in (the node's), comparing the namespace inodes.
func isNodeNS(path string) (bool, error) {
	var pod, node unix.Stat_t
	if err := unix.Stat(path, &pod); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/self/ns/net", &node); err != nil {
		return false, err
	}
	return pod.Dev == node.Dev && pod.Ino == node.Ino, nil
}

// checkIfName refuses a CNI_IFNAME that can never be a pod attachment. skel
// has already refused names the kernel would not take.
func checkIfName(name string) error {
	switch name {
	case "lo":
		return types.NewError(types.ErrInvalidEnvironmentVariables, `CNI_IFNAME "lo" is the pod's loopback interface`,
			`name the attachment's interface otherwise (e.g. "net1")`)
	case "all", "default":
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_IFNAME %q is reserved: the kernel keeps its per-interface settings there", name),
			`name the attachment's interface otherwise (e.g. "net1")`)
	}
	return nil
}
