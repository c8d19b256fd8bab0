"""HTTP handlers, one module per resource: parse the request, call the use cases, render."""
