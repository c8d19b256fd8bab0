"""The process around the app: the runner, connection bounds, probes' state and shutdown."""
