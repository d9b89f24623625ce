"""Impure: Kopf registrations. Importing this package registers every handler."""

from scriptrun.handlers import health, scriptruns, setup, workflows

__all__ = ["health", "scriptruns", "setup", "workflows"]
