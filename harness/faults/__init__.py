"""The fault scenarios of `python -m bench.faults`, as a library (tests/faults runs
short versions of scenarios 1, 4 and 5 through the same code).

- `stream`: the input of a scenario;
- `runs`: a run's topics, group and database, the service in subprocesses, waiting;
- `outcome`: the end state of a run, its comparison with the reference, the table;
- `outages`: stopping and restarting the shared broker and PostgreSQL;
- `scenarios`: the scenarios themselves.
"""
