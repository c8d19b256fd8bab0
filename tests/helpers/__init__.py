"""What the tests (and bench/) share: real servers, raw HTTP clients, app builders, data.

One module per kind of helper, so a test's imports say which it leans on: `servers`
(SecantusDB and redis-server as child processes), `service` (`python -m service` and
gunicorn as child processes), `http` (raw sockets, curl, readiness), `app` (the app under
test and its test client), `api` (the OpenAPI contract and data builders), `mongo` (driver
command recording, fail points), `metrics` (Prometheus text, gunicorn workers' scrapes, a
real Prometheus), `tls` (throw-away certificates), `tools` (external commands: found, or
skipped).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: where the service is started from
