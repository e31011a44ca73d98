"""Pulse: multi-tenant IoT fleet operations platform."""

__version__ = "0.1.0"
