"""Errors of the local cluster, each with a message meant for the person at the terminal."""

from __future__ import annotations


class ClusterError(Exception):
    """The local cluster cannot do what was asked; the message says why and what to do."""


class PrerequisiteError(ClusterError):
    """Java or Maven is missing or too old."""


class PortInUseError(ClusterError):
    """A port the cluster needs is taken by another process."""
