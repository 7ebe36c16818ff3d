"""Event-driven follow-up consumer: Kafka in, PostgreSQL state, `followup.due` out."""
