"""The pure journey engine: intake, sessionization, stage rules, channel grouping.

Nothing in this package imports Kafka, ClickHouse or Prometheus code; it is fed events and
a clock, and returns rows and signals that the adapters write or publish.
"""
