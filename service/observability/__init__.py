"""Metrics across workers, logging, request ids and the access log."""
