"""Read replicas at runtime: probe, state, router (re-exports only)."""

from dbconf.replicas.router import Router
from dbconf.replicas.state import ReplicaStatus

__all__ = ["ReplicaStatus", "Router"]
