"""The HTTP face of Pulse (Litestar): app factory, server loop, auth, routes; nothing else imports it."""
