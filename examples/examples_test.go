// Package examples keeps the example manifests and configurations honest:
// every NAD parses with the NAD client's types and its spec.config loads
// through the plugin's own loader, every pod annotation parses with the NAD
// client's parser and names NADs that exist, and a NAD of a network that also
// has a plain CNI file carries the same JSON.
package examples

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/multi-bridge-cni/multi-bridge/pkg/config"
)

// manifests decodes every YAML document under dir (recursively).
func manifests(t *testing.T, dir string) map[string][][]byte {
	t.Helper()
	docs := map[string][][]byte{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			var doc json.RawMessage
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
			if len(doc) > 0 && string(doc) != "null" {
				docs[path] = append(docs[path], doc)
			}
		}
		return nil
	})
	require.NoError(t, err)
	return docs
}

func kindOf(t *testing.T, doc []byte) string {
	var tm metav1.TypeMeta
	require.NoError(t, json.Unmarshal(doc, &tm))
	return tm.Kind
}

// loadNADConfig loads every multi-bridge plugin of a NAD's spec.config (a
// single configuration or a conflist), the way Multus would hand it over:
// name injected from the NAD when empty.
func loadNADConfig(t *testing.T, nad *nadv1.NetworkAttachmentDefinition) []*config.Network {
	t.Helper()
	conf, err := nadutils.GetCNIConfigFromSpec(nad.Spec.Config, nad.Name)
	require.NoError(t, err, "NAD %s", nad.Name)
	var probe struct {
		Type    string            `json:"type"`
		Plugins []json.RawMessage `json:"plugins"`
	}
	require.NoError(t, json.Unmarshal(conf, &probe))
	plugins := [][]byte{conf}
	if probe.Type == "" {
		plugins = nil
		for _, p := range probe.Plugins {
			plugins = append(plugins, p)
		}
	}
	var nets []*config.Network
	for _, p := range plugins {
		var typ struct {
			Type string `json:"type"`
		}
		require.NoError(t, json.Unmarshal(p, &typ))
		if typ.Type != "multi-bridge" {
			continue
		}
		n, err := config.Load(p, "")
		require.NoError(t, err, "NAD %s/%s: spec.config must load", nad.Namespace, nad.Name)
		nets = append(nets, n)
	}
	require.NotEmpty(t, nets, "NAD %s has no multi-bridge plugin", nad.Name)
	return nets
}

func TestManifests(t *testing.T) {
	docs := manifests(t, ".")
	// The example networks for many nodes ship with the deployment: the same
	// net1 and net2, with a pool sliced per node instead of a fixed subnet.
	for path, list := range manifests(t, filepath.Join("..", "deploy", "examples")) {
		docs[path] = list
	}
	type located struct {
		path string
		nad  *nadv1.NetworkAttachmentDefinition
	}
	var nads []located
	defined := map[string]bool{} // namespace/name
	var pods []*corev1.Pod
	for path, list := range docs {
		for _, doc := range list {
			switch kind := kindOf(t, doc); kind {
			case "NetworkAttachmentDefinition":
				var nad nadv1.NetworkAttachmentDefinition
				require.NoError(t, json.Unmarshal(doc, &nad), path)
				assert.Equal(t, "k8s.cni.cncf.io/v1", nad.APIVersion, path)
				if nad.Namespace == "" {
					nad.Namespace = "default"
				}
				nads = append(nads, located{path, &nad})
				defined[nad.Namespace+"/"+nad.Name] = true
			case "Pod":
				var pod corev1.Pod
				require.NoError(t, json.Unmarshal(doc, &pod), path)
				pods = append(pods, &pod)
			}
		}
	}
	for _, want := range []string{"default/net1", "default/net2", "kube-system/mgmt"} {
		assert.True(t, defined[want], "no example NAD %s", want)
	}
	require.NotEmpty(t, pods)

	pooled := map[string]bool{}
	for _, l := range nads {
		for _, n := range loadNADConfig(t, l.nad) {
			assert.Equal(t, l.nad.Name, n.Conf.Name, "%s: Multus names the network after the NAD when the config does not", l.path)
			if n.Pool != nil {
				pooled[l.path] = true
			}
		}
	}
	assert.Len(t, pooled, 2, "deploy/examples: net1 and net2 with nodeSubnets")
	for _, pod := range pods {
		sels, err := nadutils.ParsePodNetworkAnnotation(pod)
		require.NoError(t, err, pod.Name)
		seen := map[string]bool{}
		for _, s := range sels {
			assert.True(t, defined[s.Namespace+"/"+s.Name], "pod %s selects %s/%s, which no example NAD defines", pod.Name, s.Namespace, s.Name)
			assert.False(t, seen[s.InterfaceRequest], "pod %s: interface %s requested twice", pod.Name, s.InterfaceRequest)
			seen[s.InterfaceRequest] = true
		}
	}
}

// The seed's networks exist both as plain CNI files and as NADs, with the
// same JSON; both load.
func TestPlainConfigsMatchTheirNADs(t *testing.T) {
	docs := manifests(t, "nad")
	byName := map[string]string{}
	for _, list := range docs {
		for _, doc := range list {
			if kindOf(t, doc) != "NetworkAttachmentDefinition" {
				continue
			}
			var nad nadv1.NetworkAttachmentDefinition
			require.NoError(t, json.Unmarshal(doc, &nad))
			byName[nad.Name] = nad.Spec.Config
		}
	}
	files, err := filepath.Glob("cni/*.conf")
	require.NoError(t, err)
	require.Len(t, files, 3)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		n, err := config.Load(raw, "")
		require.NoError(t, err, f)
		nadConf, ok := byName[n.Conf.Name]
		require.True(t, ok, "%s: no NAD named %q in examples/nad", f, n.Conf.Name)
		assert.JSONEq(t, string(raw), nadConf, "%s and its NAD differ", f)
	}
}

// The static-IP pod's requests are what the plugin turns into runtimeConfig.
func TestStaticPodRequests(t *testing.T) {
	var pod corev1.Pod
	raw, err := os.ReadFile("nad/pod-static.yaml")
	require.NoError(t, err)
	require.NoError(t, utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096).Decode(&pod))
	sels, err := nadutils.ParsePodNetworkAnnotation(&pod)
	require.NoError(t, err)
	require.Len(t, sels, 2)
	assert.Equal(t, "net1", sels[0].InterfaceRequest)
	assert.Equal(t, []string{"10.240.10.50/24"}, sels[0].IPRequest)
	assert.Equal(t, "0a:58:0a:f0:0a:32", sels[0].MacRequest)
	assert.Equal(t, []string{"10.240.20.50/24"}, sels[1].IPRequest)
}
