"""scriptrun: run Python scripts and DAG workflows as pods, measure what they used and what they cost."""

__version__ = "0.1.0"

API_GROUP = "scriptrun.dev"
API_VERSION = "v1alpha1"
DEFAULT_IMAGE = f"scriptrun/runner:{__version__}"
# the usage sidecar: its own small image, an operator setting, never the run's spec.image
DEFAULT_MONITOR_IMAGE = f"scriptrun/monitor:{__version__}"
# the operator's own image (the chart's default); `make image` builds all three registry-free
OPERATOR_IMAGE = f"scriptrun/operator:{__version__}"
