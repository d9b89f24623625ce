"""The two controllers, as objects built at start-up with typed dependencies (the API client, the
operator's configuration, and a callback to the other controller): observe, decide (the engine),
apply (`scriptrun.k8s.apply`). No Kopf here: `scriptrun.handlers` registers thin Kopf handlers
that feed these objects; the ScriptRun and Workflow controllers never import each other."""
