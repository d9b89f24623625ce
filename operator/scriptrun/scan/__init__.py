"""spec.gates.before: security scans of a run's script and inputs before it starts.

Run by `scriptrun gate` in the runner image (the pod's first init container) and by `scriptrun run`
before each attempt. No network: Bandit and detect-secrets read only the script and its inputs, and
the vulnerability database is an OSV export the cluster provides (a ConfigMap)."""
