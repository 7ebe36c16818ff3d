"""`run` with WORKERS > 1: several instances of the service on one host.

One Python process uses at most one core; the consumer group splits the
partitions between processes exactly as between hosts, so N workers here are N
ordinary instances (own Kafka member, own dispatcher, shared database) under a
supervisor that forwards signals and restarts a worker that dies.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from consumer.entrypoints.exit_codes import (
    EXIT_KAFKA_UNAVAILABLE,
    EXIT_PORT_IN_USE,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 2.0
# A worker that exits with one of these could not start (configuration, database,
# Kafka, HTTP port): the supervisor stops the others and exits with the same code.
CANNOT_START = frozenset({EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_KAFKA_UNAVAILABLE, EXIT_PORT_IN_USE})


def supervise(workers: int) -> int:
    command = [sys.executable, "-m", "consumer", "run"]
    base_port = int(os.environ.get("HTTP_PORT", "8080"))

    def env(i: int) -> dict[str, str]:
        # Each worker serves its own health and metrics: HTTP_PORT, HTTP_PORT+1, ...
        port = str(base_port + i) if base_port else "0"
        return {**os.environ, "WORKERS": "1", "HTTP_PORT": port}

    procs = {i: subprocess.Popen(command, env=env(i)) for i in range(workers)}
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("workers started", extra={"workers": workers, "pids": [p.pid for p in procs.values()]})
    while True:
        time.sleep(0.2)
        if stopping:
            codes = [p.wait() for p in procs.values()]
            log.info("workers stopped", extra={"exit_codes": codes})
            return max(codes, default=0)
        for i, p in list(procs.items()):
            code = p.poll()
            if code is None:
                continue
            if code in CANNOT_START:
                # It said why in one line; starting it again would only say it again.
                stop(signal.SIGTERM, None)
                codes = [q.wait() for q in procs.values()]
                log.info("workers stopped", extra={"exit_codes": codes})
                return code
            # A crash loses nothing (offsets live with the effects); start again.
            log.error("worker died; restarting", extra={"worker": i, "exit_code": code})
            time.sleep(RESTART_DELAY_SECONDS)
            procs[i] = subprocess.Popen(command, env=env(i))
