"""Exit codes of the command line, one meaning each (the README lists them).

argparse's usage errors are 2 as well. `run` exits 0 after a clean stop (SIGTERM,
Ctrl-C) and with one of these, after one line on stderr, when it cannot start.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOT_FOUND = 1  # followups show/cancel: no such follow-up
EXIT_UNHEALTHY = 1  # health: not `healthy`
EXIT_NOT_AT_HEAD = 1  # migrate --current: the schema is not at this release's newest revision
EXIT_INCOMPLETE = 1  # tail --max N --timeout S: fewer than N records within S seconds
EXIT_USAGE = 2  # bad arguments, invalid configuration, erase-user or a downgrade without --yes
EXIT_NOT_PENDING = 3  # followups cancel: no longer pending
EXIT_LIMIT_REACHED = 4  # followups schedule: the user's pending limit is reached
EXIT_UNAVAILABLE = (
    5  # PostgreSQL unreachable/refused/no such database (Kafka, for produce-sample and tail)
)
EXIT_TOO_LATE = 6  # followups schedule: the time is past MAX_LATENESS_HOURS, it would never be sent
EXIT_KAFKA_UNAVAILABLE = 7  # run, replay: no Kafka broker answered at KAFKA_BOOTSTRAP_SERVERS
EXIT_PORT_IN_USE = 8  # run: HTTP_HOST:HTTP_PORT cannot be bound (in use, or not an address here)
EXIT_SCHEMA = 9  # migrate: the schema is a newer release's, or none this release recognises
EXIT_INTERRUPTED = 130  # produce-sample stopped by SIGINT or SIGTERM (128 + SIGINT)
