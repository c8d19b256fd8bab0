"""What the service is about, without HTTP or BSON: use cases, shapes, ids and cursors."""
