"""Pulse fleet."""
