package e2e

// The deployment manifests against the real API server: applied server-side
// (so schemas, RBAC objects and admission check them), and the agent run with
// the ServiceAccount's rights instead of an admin's.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multi-bridge-cni/multi-bridge/test/kubetest"
)

// kubectl runs kubectl against the test API server.
func kubectl(t *testing.T, s *suite, args ...string) string {
	t.Helper()
	out, err := kubetest.Output("kubectl", append([]string{"--kubeconfig", s.server.Kubeconfig}, args...)...)
	require.NoError(t, err, "kubectl %s:\n%s", strings.Join(args, " "), out)
	return out
}

// applyAll applies every manifest of the project server-side, in the order
// a user would: the NAD CRD (clusters without Multus), multi-bridge itself,
// the seed's NADs and pods (one node, fixed subnets), then the example
// networks for many nodes, which are the same net1 and net2 with a pool.
func applyAll(t *testing.T, s *suite) {
	t.Helper()
	root := kubetest.RepoRoot()
	ssa := []string{"apply", "--server-side", "--field-manager=multi-bridge-e2e"}
	kubectl(t, s, append(ssa, "-k", filepath.Join(root, "deploy", "nad-crd"))...)
	kubectl(t, s, "wait", "--for=condition=Established", "--timeout=60s", "crd/network-attachment-definitions.k8s.cni.cncf.io")
	kubectl(t, s, append(ssa, "-k", filepath.Join(root, "deploy"))...)
	kubectl(t, s, append(ssa, "-f", filepath.Join(root, "examples", "nad"))...)
	kubectl(t, s, append(ssa, "-k", filepath.Join(root, "deploy", "examples"))...)
}

func TestDeployManifestsApplyServerSide(t *testing.T) {
	s := setup(t)
	applyAll(t, s)

	var ds struct {
		Spec struct {
			Template struct {
				Spec struct {
					HostNetwork        bool   `json:"hostNetwork"`
					PriorityClassName  string `json:"priorityClassName"`
					ServiceAccountName string `json:"serviceAccountName"`
					Tolerations        []struct {
						Operator string `json:"operator"`
					} `json:"tolerations"`
					InitContainers []struct {
						Command []string `json:"command"`
					} `json:"initContainers"`
					Containers []struct {
						LivenessProbe, ReadinessProbe struct {
							HTTPGet struct {
								Path string `json:"path"`
							} `json:"httpGet"`
						}
						Resources struct {
							Limits map[string]string `json:"limits"`
						} `json:"resources"`
						SecurityContext struct {
							Capabilities struct {
								Add []string `json:"add"`
							} `json:"capabilities"`
						} `json:"securityContext"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	require.NoError(t, json.Unmarshal([]byte(kubectl(t, s, "get", "daemonset", "-n", "multi-bridge", "multi-bridge-agent", "-o", "json")), &ds))
	spec := ds.Spec.Template.Spec
	assert.True(t, spec.HostNetwork)
	assert.Equal(t, "system-node-critical", spec.PriorityClassName)
	assert.Equal(t, "multi-bridge-agent", spec.ServiceAccountName)
	require.Len(t, spec.Tolerations, 1)
	assert.Equal(t, "Exists", spec.Tolerations[0].Operator, "tolerates every taint")
	require.Len(t, spec.InitContainers, 1)
	assert.Equal(t, "install", spec.InitContainers[0].Command[1])
	require.Len(t, spec.Containers, 1)
	assert.Equal(t, "/healthz", spec.Containers[0].LivenessProbe.HTTPGet.Path)
	assert.Equal(t, "/readyz", spec.Containers[0].ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, "256Mi", spec.Containers[0].Resources.Limits["memory"])
	assert.Equal(t, []string{"NET_ADMIN"}, spec.Containers[0].SecurityContext.Capabilities.Add)

	nads := kubectl(t, s, "get", "network-attachment-definitions", "-A", "-o", "name")
	assert.Equal(t, []string{
		"networkattachmentdefinition.k8s.cni.cncf.io/mgmt",
		"networkattachmentdefinition.k8s.cni.cncf.io/net1",
		"networkattachmentdefinition.k8s.cni.cncf.io/net2",
	}, sortedUnique(strings.Fields(nads)))
	assert.Contains(t, kubectl(t, s, "get", "pods", "-n", "default", "-o", "name"), "pod/netshoot-static")

	// The schemas are enforced: a SubnetLease without a node is refused.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("apiVersion: multi-bridge.cni.dev/v1alpha1\nkind: SubnetLease\nmetadata: {name: net1.bad}\nspec: {network: net1, pool: 10.240.16.0/20, subnet: 10.240.16.0/24}\n"), 0o644))
	out, err := kubetest.Output("kubectl", "--kubeconfig", s.server.Kubeconfig, "apply", "--server-side", "-f", bad)
	require.Error(t, err)
	assert.Contains(t, out, "spec.node: Required value")
}

// The agent with exactly its ServiceAccount's rights: it leases and routes,
// and is refused what it should not do.
func TestAgentWithServiceAccountRights(t *testing.T) {
	s := setup(t)
	applyAll(t, s)
	token, err := s.server.Kube.CoreV1().ServiceAccounts("multi-bridge").CreateToken(ctxT(t), "multi-bridge-agent",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	require.NoError(t, err)
	kubeconfig := serviceAccountKubeconfig(t, s, token.Status.Token)

	c := newCluster(t, s)
	nodes := []*node{c.addNode("sa-node1", "192.0.2.11", ""), c.addNode("sa-node2", "192.0.2.12", "")}
	for _, n := range nodes {
		c.startWith(n, kubeconfig)
	}
	// net1 and net2 come from deploy/examples, applied above.
	eventually(t, converge, "both nodes lease their slices and route each other's", func() (bool, string) {
		for _, n := range nodes {
			if got := agentRoutes(t, n); len(got) != 2 {
				return false, n.name + ": " + strings.Join(got, "; ")
			}
		}
		return true, ""
	})
	for _, n := range nodes {
		assert.NotContains(t, n.agent.Log(), "forbidden", "%s's agent was refused something it needs", n.name)
	}

	sa, err := kubernetes.NewForConfig(restConfigFrom(t, kubeconfig))
	require.NoError(t, err)
	err = sa.CoreV1().Nodes().Delete(ctxT(t), "sa-node2", metav1.DeleteOptions{})
	assert.True(t, apierrors.IsForbidden(err), "deleting a Node must be forbidden, got %v", err)
	_, err = sa.CoreV1().Secrets("kube-system").List(ctxT(t), metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "listing Secrets must be forbidden, got %v", err)

	for _, c := range []struct {
		group, resource, verb string
		allowed               bool
	}{
		{"", "nodes", "watch", true},
		{"", "nodes", "patch", false},
		{"", "nodes", "delete", false},
		{"multi-bridge.cni.dev", "subnetleases", "create", true},
		{"multi-bridge.cni.dev", "subnetleases", "delete", true},
		{"k8s.cni.cncf.io", "network-attachment-definitions", "list", true},
		{"k8s.cni.cncf.io", "network-attachment-definitions", "create", false},
		{"", "events", "create", true},
		{"", "events", "patch", true},
		{"", "events", "update", false},
		{"", "pods", "list", false},
		{"", "secrets", "get", false},
	} {
		review, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctxT(t), &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Group: c.group, Resource: c.resource, Verb: c.verb}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		assert.Equal(t, c.allowed, review.Status.Allowed, "%s %s.%s", c.verb, c.resource, c.group)
	}
}

// serviceAccountKubeconfig is the admin kubeconfig with the
// ServiceAccount's token instead of the admin's.
func serviceAccountKubeconfig(t *testing.T, s *suite, token string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(s.server.Kubeconfig)
	require.NoError(t, err)
	for _, a := range cfg.AuthInfos {
		a.Token = token
	}
	path := filepath.Join(t.TempDir(), "agent.kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, path))
	return path
}

func restConfigFrom(t *testing.T, kubeconfig string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	return cfg
}

func sortedUnique(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func ptr[T any](v T) *T { return &v }

// The cluster-default network's configuration, given with --cni-config, is
// written into the conf dir only once the node holds its slices (so the
// runtime does not send pods the plugin cannot serve yet), and removed when
// the agent stops (--remove-cni-config-on-exit).
func TestAgentWritesCNIConfigOnceReady(t *testing.T) {
	s := setup(t)
	c := newCluster(t, s)
	n := c.addNode("conf-node1", "192.0.2.11", "10.240.3.0/24")
	src := filepath.Join(kubetest.RepoRoot(), "examples", "cluster", "00-mgmt.conf")
	target := filepath.Join(n.confDir, "00-mgmt.conf")
	a, err := kubetest.StartAgent(kubetest.AgentOptions{
		Binary: s.agentBin, Node: n.name, Kubeconfig: s.server.Kubeconfig, RuntimeDir: n.runtimeDir,
		NetNS: n.ns.Path(), CNIConfDir: n.confDir, LogFile: n.logFile,
		ExtraArgs: []string{"--cni-config", src, "--remove-cni-config-on-exit"},
	})
	require.NoError(t, err)
	t.Cleanup(func() { a.Kill() })
	eventually(t, converge, "the configuration written", func() (bool, string) {
		_, err := os.Stat(target)
		return err == nil, fmt.Sprint(err)
	})
	// Written after the slice: the plugin can serve ADD as soon as the
	// runtime sees the file.
	assert.Equal(t, "10.240.3.0/24", slicesFile(t, n, "mgmt"))
	want, _ := os.ReadFile(src)
	got, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	require.NoError(t, a.Stop())
	assert.NoFileExists(t, target, "removed when the agent stops")
}
