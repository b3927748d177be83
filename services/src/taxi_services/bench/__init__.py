"""`taxi bench`: the pipeline's speed, measured on a real cluster in one run.

figures, results and profile are the arithmetic and the report (pure); cluster, probes, pyspy
and runner do the Kafka and process work; workers holds the designs the predictor is compared
with.
"""
