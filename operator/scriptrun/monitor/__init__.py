"""The usage monitor: the sidecar and the in-process sampler used by the local backend."""
