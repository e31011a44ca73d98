"""Pulse web."""
