// Command kstatus prints the status that kstatus computes for Kubernetes objects, with two copies
// of the library: sigs.k8s.io/cli-utils/pkg/kstatus (kpt, the cli-utils applier, Config Sync) and
// Flux's fork github.com/fluxcd/cli-utils/pkg/kstatus, the one Flux's kustomize-controller uses
// for `wait: true` and `healthChecks`. The end-to-end tests feed it BaselinePolicies read from
// the API server, so the health that ecosystem computes is checked with its own code.
//
// Input on stdin: one object or a List as JSON (`kubectl get ... -o json`). Output on stdout: one
// JSON line per object, {"name", "status", "message", "fluxStatus", "fluxMessage"}, with a status
// one of InProgress, Failed, Current, Terminating, NotFound, Unknown.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	fluxstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type line struct {
	Name        string `json:"name"`
	Status      string `json:"status"`
	Message     string `json:"message"`
	FluxStatus  string `json:"fluxStatus"`
	FluxMessage string `json:"fluxMessage"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("stdin is not a Kubernetes object or List in JSON: %w", err)
	}
	objects := []unstructured.Unstructured{obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			return fmt.Errorf("reading the List: %w", err)
		}
		objects = list.Items
	}
	enc := json.NewEncoder(out)
	for i := range objects {
		res, err := status.Compute(objects[i].DeepCopy())
		if err != nil {
			return fmt.Errorf("%s %s: %w", objects[i].GetKind(), objects[i].GetName(), err)
		}
		flux, err := fluxstatus.Compute(objects[i].DeepCopy())
		if err != nil {
			return fmt.Errorf("%s %s (Flux): %w", objects[i].GetKind(), objects[i].GetName(), err)
		}
		out := line{objects[i].GetName(), res.Status.String(), res.Message, flux.Status.String(), flux.Message}
		if err := enc.Encode(out); err != nil {
			return err
		}
	}
	return nil
}
