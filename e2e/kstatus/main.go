// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library
// Flux and kstatus-based waiters use) computes for the Kubernetes objects on stdin: YAML or
// JSON, several documents or a List, one JSON line per object.
//
//	kubectl get ws -o yaml | kstatus
//	{"kind":"Workspace","namespace":"default","name":"ide","status":"Current","message":"Resource is Ready"}
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// verdict is one object's kstatus result.
type verdict struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// InProgress, Current, Failed, Terminating or Unknown.
	Status string `json:"status"`
	// The reason of the Reconciling or Stalled condition kstatus derived, if any.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	objects, err := read(in)
	if err != nil {
		return err
	}
	if len(objects) == 0 {
		return errors.New("no object on stdin")
	}
	enc := json.NewEncoder(out)
	for _, obj := range objects {
		res, err := status.Compute(obj)
		if err != nil {
			return fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		v := verdict{
			Kind:      obj.GetKind(),
			Namespace: obj.GetNamespace(),
			Name:      obj.GetName(),
			Status:    res.Status.String(),
			Message:   res.Message,
		}
		if len(res.Conditions) > 0 {
			v.Reason = res.Conditions[0].Reason
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}

// read parses every document on in, expanding Lists into their items.
func read(in io.Reader) ([]*unstructured.Unstructured, error) {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var objects []*unstructured.Unstructured
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return objects, nil
		}
		if err != nil {
			return nil, err
		}
		data, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if data = bytes.TrimSpace(data); len(data) == 0 || string(data) == "null" {
			continue
		}
		// UnmarshalJSON keeps integers as int64, which kstatus' generation checks need.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(data); err != nil {
			return nil, err
		}
		if !obj.IsList() {
			objects = append(objects, obj)
			continue
		}
		list, err := obj.ToList()
		if err != nil {
			return nil, err
		}
		for i := range list.Items {
			objects = append(objects, &list.Items[i])
		}
	}
}
