"""Pure: build Kubernetes objects (plain dicts) from a frozen input snapshot."""
