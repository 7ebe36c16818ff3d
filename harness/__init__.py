"""Tools that tests/ and bench/ share: where the services are, fresh databases and
topics, input events, producing, reading the state back, and the fault scenarios.

Neither tests/ nor bench/ imports the other; both import this. It imports neither,
and `consumer` never imports it.
"""
