"""Pulse alerting."""
