"""Read models the API serves (queries over scoped connections; no Litestar)."""
