"""Pulse notify."""
