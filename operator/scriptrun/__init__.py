"""scriptrun: run Python scripts and DAG workflows as pods, measure what they used and what they cost."""

__version__ = "0.1.0"

API_GROUP = "scriptrun.dev"
API_VERSION = "v1alpha1"
DEFAULT_IMAGE = f"scriptrun/runner:{__version__}"
