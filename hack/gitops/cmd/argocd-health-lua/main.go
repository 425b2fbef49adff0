// Command argocd-health-lua evaluates an Argo CD resource health check written in Lua with Argo
// CD's own Lua package (util/lua, the code the application controller runs for
// `resource.customizations.health.<group>_<kind>` in argocd-cm). The GitOps tests use it to check
// the shipped BaselinePolicy health check on objects read from the API server, besides watching
// the real controller apply it.
//
// Usage: argocd-health-lua --script "<lua>" < object.json (one object or a List). Output: one
// JSON line per object, {"name", "status", "message"}.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/argoproj/argo-cd/v3/util/lua"
)

type line struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	script := flag.String("script", "", "the Lua health check")
	flag.Parse()
	if *script == "" {
		fmt.Fprintln(os.Stderr, "argocd-health-lua: --script is required")
		os.Exit(2)
	}
	if err := run(*script, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "argocd-health-lua: %v\n", err)
		os.Exit(1)
	}
}

func run(script string, in io.Reader, out io.Writer) error {
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
	vm := lua.VM{}
	enc := json.NewEncoder(out)
	for i := range objects {
		health, err := vm.ExecuteHealthLua(&objects[i], script)
		if err != nil {
			return fmt.Errorf("%s %s: %w", objects[i].GetKind(), objects[i].GetName(), err)
		}
		if err := enc.Encode(line{objects[i].GetName(), string(health.Status), health.Message}); err != nil {
			return err
		}
	}
	return nil
}
