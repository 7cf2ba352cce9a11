"""The fleet: PostgreSQL as the shared registry, a local copy (mirror) and an outbox on each kiosk."""
