"""Pulse ingest."""
