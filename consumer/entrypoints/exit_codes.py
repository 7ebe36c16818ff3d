"""Exit codes of the command line (argparse's usage errors are 2 as well)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_UNHEALTHY = 1
EXIT_NOT_AT_HEAD = 1  # migrate --current: the schema is not at this release's newest revision
EXIT_INCOMPLETE = 1  # tail --max N --timeout S: fewer than N records within S seconds
EXIT_USAGE = 2  # bad arguments, invalid configuration, erase-user or a downgrade without --yes
EXIT_NOT_PENDING = 3
EXIT_LIMIT_REACHED = 4
EXIT_UNAVAILABLE = 5  # the database (or Kafka, for produce-sample and tail) did not answer
EXIT_SCHEMA = 6  # migrate: the schema is a newer release's, or none this release recognises
EXIT_INTERRUPTED = 130  # produce-sample stopped by SIGINT or SIGTERM (128 + SIGINT)
