"""Exit codes of the command line (argparse's usage errors are 2 as well)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2  # bad arguments, invalid configuration, erase-user without --yes
EXIT_NOT_PENDING = 3
EXIT_LIMIT_REACHED = 4
EXIT_UNAVAILABLE = 5  # the database did not answer or refused the query
