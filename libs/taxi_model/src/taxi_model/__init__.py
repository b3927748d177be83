"""ML-taxi trip data, features, training, evaluation and the model artifact."""
