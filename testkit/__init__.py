"""testkit: what the tests and the benchmarks share, so that ``bench/`` never imports ``tests/``.

Real servers on free loopback ports (``servers``: ClickHouse, Redis, PostgreSQL; ``cluster``: the
loopback cluster of deploy/cluster/loopback.py), generated telemetry (``spangen``, ``loggen``,
``metricgen``, the dashboard data set ``seed``), OTLP load with retrying senders (``otlp_load``) and
a webhook receiver (``receiver``). It lives in the repository beside ``tests/`` and ``bench/`` and is
not installed with tracehouse (pytest puts the repository root on ``sys.path``; a bench script
inserts it). Test-only helpers stay in ``tests/support/``.
"""
