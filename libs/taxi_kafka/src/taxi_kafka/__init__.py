"""ML-taxi Kafka clients, admin and the local 3-broker cluster."""
