"""`taxi chaos`: the pipeline under faults (scenarios), and the independent checker of what
the topics hold afterwards."""
