"""Real packets for the tests: a NetworkPolicy dataplane of network namespaces enforced by
kube-router (dataplane.py), the probes (probes.py) and the node agent (agent.py)."""
