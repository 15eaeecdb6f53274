// Package kubetest runs the pieces of a Kubernetes cluster that multi-bridge's
// end-to-end tests, benchmark and cluster demo need: a real kube-apiserver
// (hack/apiserver.sh), the CRDs, Node and NetworkAttachmentDefinition
// objects, and multi-bridge-agent processes. It returns errors instead of
// taking a *testing.T, so the demo uses it too.
package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multi-bridge-cni/multi-bridge/pkg/agent"
	"github.com/multi-bridge-cni/multi-bridge/pkg/agent/lease"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Server is a running etcd + kube-apiserver.
type Server struct {
	Dir        string
	Kubeconfig string
	Config     *rest.Config
	*Client
}

// StartServer starts a kube-apiserver with its state in a new directory
// under parent (bin/kube-apiserver must exist: hack/apiserver.sh build),
// installs multi-bridge's SubnetLease CRD and the NetworkAttachmentDefinition
// CRD, and waits until both are served.
func StartServer(parent string) (*Server, error) {
	dir, err := os.MkdirTemp(parent, "apiserver-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "apiserver.sh"), "start", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/apiserver.sh start %s: %v\n%s", dir, err, stderr.String())
	}
	s := &Server{Dir: dir, Kubeconfig: strings.TrimSpace(string(out))}
	if s.Config, err = clientcmd.BuildConfigFromFlags("", s.Kubeconfig); err != nil {
		s.Stop()
		return nil, err
	}
	s.Config.QPS, s.Config.Burst = 200, 400
	if s.Client, err = NewClient(s.Config); err != nil {
		s.Stop()
		return nil, err
	}
	for _, f := range []string{"deploy/crds/subnetlease.yaml", "deploy/nad-crd/network-attachment-definitions.yaml"} {
		if err := s.ApplyCRD(filepath.Join(RepoRoot(), f)); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
}

// Stop stops the server and removes its state.
func (s *Server) Stop() {
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "apiserver.sh"), "stop", s.Dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	_ = cmd.Run()
	_ = os.RemoveAll(s.Dir)
}

// Pause stops the kube-apiserver process with SIGSTOP (etcd runs on), as a
// hung API server: connections stay open and nothing answers. The returned
// function resumes it; call it in a cleanup, as the server is shared.
func (s *Server) Pause() (resume func(), err error) {
	pids, err := os.ReadFile(filepath.Join(s.Dir, "pids"))
	if err != nil {
		return nil, err
	}
	for _, f := range strings.Fields(string(pids)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		// Ours: started with our state directory (never a recycled pid).
		if err != nil || !bytes.Contains(cmdline, []byte("kube-apiserver")) || !bytes.Contains(cmdline, []byte(s.Dir+"/")) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return nil, err
		}
		return func() { _ = syscall.Kill(pid, syscall.SIGCONT) }, nil
	}
	return nil, fmt.Errorf("no kube-apiserver process of %s in its pids file", s.Dir)
}

// Client talks to the API server.
type Client struct {
	Kube kubernetes.Interface
	Dyn  dynamic.Interface
}

// NewClient returns clients for cfg.
func NewClient(cfg *rest.Config) (*Client, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{Kube: kube, Dyn: dyn}, nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ApplyCRD creates the CRD in file and waits until it is established.
func (c *Client) ApplyCRD(file string) error {
	objs, err := ReadManifests(file)
	if err != nil {
		return err
	}
	ctx := context.Background()
	for _, o := range objs {
		if _, err := c.Dyn.Resource(crdGVR).Create(ctx, o, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating CRD from %s: %w", file, err)
		}
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			u, err := c.Dyn.Resource(crdGVR).Get(ctx, o.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, cond := range conds {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", o.GetName(), err)
		}
	}
	// Discovery lags the Established condition a little.
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for _, o := range objs {
			group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
			versions, _, _ := unstructured.NestedSlice(o.Object, "spec", "versions")
			v, _ := versions[0].(map[string]any)
			if _, err := c.Kube.Discovery().ServerResourcesForGroupVersion(group + "/" + fmt.Sprint(v["name"])); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
}

// ReadManifests reads the YAML documents of a file.
func ReadManifests(file string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := k8syaml.NewYAMLOrJSONDecoder(f, 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if m != nil {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// CreateNode creates a Node with InternalIP ip (none when empty) and
// podCIDR (none when empty), as a kubelet and the node IPAM controller would.
func (c *Client) CreateNode(ctx context.Context, name, ip, podCIDR string) (*corev1.Node, error) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if podCIDR != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDR, []string{podCIDR}
	}
	n, err := c.Kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating Node %s: %w", name, err)
	}
	if ip == "" {
		return n, nil
	}
	return c.SetInternalIP(ctx, name, ip)
}

// SetInternalIP sets the Node's status addresses to one InternalIP.
func (c *Client) SetInternalIP(ctx context.Context, name, ip string) (*corev1.Node, error) {
	patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q},{"type":"Hostname","address":%q}]}}`, ip, name)
	n, err := c.Kube.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, fmt.Errorf("setting Node %s's InternalIP: %w", name, err)
	}
	return n, nil
}

// DeleteNode deletes a Node.
func (c *Client) DeleteNode(ctx context.Context, name string) error {
	err := c.Kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// Leases lists all SubnetLeases (of one network when network is set).
func (c *Client) Leases(ctx context.Context, network string) ([]lease.Lease, error) {
	sel := map[string]string{}
	if network != "" {
		sel[lease.LabelNetwork] = lease.LabelValue(network)
	}
	ls, bad, err := lease.NewClient(c.Dyn).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	return ls, errors.Join(bad...)
}

// CreateNAD creates a NetworkAttachmentDefinition with the given CNI config.
func (c *Client) CreateNAD(ctx context.Context, namespace, name, config string) error {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"spec":     map[string]any{"config": config},
	}}
	return c.CreateObject(ctx, u)
}

// UpdateNADConfig replaces a NetworkAttachmentDefinition's spec.config, as
// `kubectl edit` would (same object, same UID).
func (c *Client) UpdateNADConfig(ctx context.Context, namespace, name, config string) error {
	res := c.Dyn.Resource(agent.NADResource()).Namespace(namespace)
	u, err := res.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if err := unstructured.SetNestedField(u.Object, config, "spec", "config"); err != nil {
		return err
	}
	_, err = res.Update(ctx, u, metav1.UpdateOptions{})
	return err
}

// DeleteNAD deletes a NetworkAttachmentDefinition.
func (c *Client) DeleteNAD(ctx context.Context, namespace, name string) error {
	return c.Dyn.Resource(agent.NADResource()).Namespace(namespace).Delete(ctx, name, metav1.DeleteOptions{})
}

// CreateObject creates a NAD or lease object (the kinds tests use), making
// its namespace first.
func (c *Client) CreateObject(ctx context.Context, u *unstructured.Unstructured) error {
	var gvr schema.GroupVersionResource
	switch u.GetKind() {
	case "NetworkAttachmentDefinition":
		gvr = agent.NADResource()
	case lease.Kind:
		gvr = lease.GVR()
	default:
		return fmt.Errorf("kubetest cannot create a %s", u.GetKind())
	}
	if ns := u.GetNamespace(); ns != "" {
		_, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		_, err = c.Dyn.Resource(gvr).Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
		return err
	}
	_, err := c.Dyn.Resource(gvr).Create(ctx, u, metav1.CreateOptions{})
	return err
}

// Reset deletes every Node, SubnetLease, NetworkAttachmentDefinition and
// Event, so each test starts from an empty cluster.
func (c *Client) Reset(ctx context.Context) error {
	var errs []error
	all := metav1.ListOptions{}
	errs = append(errs, c.Kube.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, all))
	errs = append(errs, c.Dyn.Resource(lease.GVR()).DeleteCollection(ctx, metav1.DeleteOptions{}, all))
	nss, err := c.Kube.CoreV1().Namespaces().List(ctx, all)
	if err != nil {
		return err
	}
	for _, ns := range nss.Items {
		errs = append(errs, c.Dyn.Resource(agent.NADResource()).Namespace(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, all))
		errs = append(errs, c.Kube.CoreV1().Events(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, all))
	}
	return errors.Join(errs...)
}

// Events returns the Events on a Node, oldest first, as "Type Reason: message".
func (c *Client) Events(ctx context.Context, node string) ([]string, error) {
	list, err := c.Kube.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + node,
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
	}
	return out, nil
}
