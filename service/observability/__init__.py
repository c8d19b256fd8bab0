"""Metrics across workers, logging, request ids and the access log.

Metrics: `metric_specs` (what is measured), `metrics` (recording, per request),
`samples` (where values live, shared across gunicorn workers), `scrape` (GET /metrics),
`process_stats`, `database_timer`. Logs: `logging_setup`, `request_ids`,
`client_address`, `access_log`.
"""
