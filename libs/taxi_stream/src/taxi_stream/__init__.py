"""ML-taxi streaming state: the producer's replay schedule and the aggregator's join and windows.

Pure and clock-free: nothing here talks to Kafka; the services feed it records and the time.
"""

import lazy_loader

# Each public name (listed in __init__.pyi) is imported on first use: a service pays only for
# the modules it uses (scikit-learn, skops and river each take a second or more to import).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
