"""Benchmarks against the real Kafka broker and PostgreSQL (see bench/README.md)."""
