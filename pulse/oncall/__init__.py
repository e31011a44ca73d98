"""Pulse oncall."""
