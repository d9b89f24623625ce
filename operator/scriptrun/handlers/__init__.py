"""Impure: Kopf registrations. Importing this package registers every handler."""

from scriptrun.handlers import scriptruns, setup, workflows

__all__ = ["scriptruns", "setup", "workflows"]
