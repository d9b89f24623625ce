"""Impure (local processes): run ScriptRun manifests on this machine with the engine's semantics."""
