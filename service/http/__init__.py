"""The HTTP layer: the route table, the middleware around each handler, and the handlers."""
