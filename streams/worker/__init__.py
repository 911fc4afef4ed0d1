"""The Kafka worker: Faust agents around the pure engine."""
