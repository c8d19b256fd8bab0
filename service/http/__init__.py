"""The HTTP layer: the route table, the pipeline around each handler, and the handlers."""
