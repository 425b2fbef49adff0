// Command kube-controller-manager is the upstream controller manager; the local control plane
// needs it for namespace deletion, ownerReference garbage collection and default ServiceAccounts.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
