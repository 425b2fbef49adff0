// Command kstatus prints the health Flux and other kstatus users compute for Kubernetes objects:
//
//   - status/message: sigs.k8s.io/cli-utils/pkg/kstatus (kpt, the cli-utils applier, Config Sync);
//   - fluxStatus/fluxMessage: Flux's fork github.com/fluxcd/cli-utils/pkg/kstatus, the one
//     kustomize-controller uses for `wait: true` and `healthChecks`;
//   - celStatus/celMessage, with --flux-kustomization FILE: the `healthCheckExprs` of that Flux
//     Kustomization for the object's kind, evaluated by Flux's own package
//     (github.com/fluxcd/pkg/runtime/cel); an evaluation error is reported as Unknown, as Flux's
//     status reader does.
//
// The end-to-end tests feed it BaselinePolicies read from the API server, so the health these
// tools compute is checked with their own code. Input on stdin: one object or a List as JSON
// (`kubectl get ... -o json`). Output on stdout: one JSON line per object. Statuses are one of
// InProgress, Failed, Current, Terminating, NotFound, Unknown.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	fluxstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type line struct {
	Name        string `json:"name"`
	Status      string `json:"status"`
	Message     string `json:"message"`
	FluxStatus  string `json:"fluxStatus"`
	FluxMessage string `json:"fluxMessage"`
	CELStatus   string `json:"celStatus,omitempty"`
	CELMessage  string `json:"celMessage,omitempty"`
}

// fluxKustomization is the part of a Flux Kustomization this command reads.
type fluxKustomization struct {
	Spec struct {
		HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
	} `json:"spec"`
}

func main() {
	kustomization := flag.String("flux-kustomization", "", "a Flux Kustomization (YAML) whose healthCheckExprs to evaluate")
	flag.Parse()
	if err := run(*kustomization, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(1)
	}
}

func evaluators(path string) (map[schema.GroupKind]*fluxcel.StatusEvaluator, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var k fluxKustomization
	if err := yaml.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[schema.GroupKind]*fluxcel.StatusEvaluator{}
	for i, hc := range k.Spec.HealthCheckExprs {
		e, err := fluxcel.NewStatusEvaluator(&hc.HealthCheckExpressions)
		if err != nil {
			return nil, fmt.Errorf("%s: healthCheckExprs[%d]: %w", path, i, err)
		}
		out[schema.FromAPIVersionAndKind(hc.APIVersion, hc.Kind).GroupKind()] = e
	}
	return out, nil
}

func run(kustomizationPath string, in io.Reader, out io.Writer) error {
	cel, err := evaluators(kustomizationPath)
	if err != nil {
		return err
	}
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
		o := &objects[i]
		res, err := status.Compute(o.DeepCopy())
		if err != nil {
			return fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err)
		}
		flux, err := fluxstatus.Compute(o.DeepCopy())
		if err != nil {
			return fmt.Errorf("%s %s (Flux): %w", o.GetKind(), o.GetName(), err)
		}
		l := line{o.GetName(), res.Status.String(), res.Message, flux.Status.String(), flux.Message, "", ""}
		if e, ok := cel[o.GroupVersionKind().GroupKind()]; ok {
			r, err := e.Evaluate(context.Background(), o.DeepCopy())
			if err != nil {
				l.CELStatus, l.CELMessage = fluxstatus.UnknownStatus.String(), err.Error()
			} else {
				l.CELStatus, l.CELMessage = r.Status.String(), r.Message
			}
		}
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
	return nil
}
