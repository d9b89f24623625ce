"""Pure: run and DAG semantics (phases, retry decisions, backoff), shared by every backend."""
