"""ML-taxi trip data (Kaggle CSV and synthetic), features, training, evaluation and the model
artifact.

The public names are those of `__init__.pyi` (`__all__`); the underscored modules are
implementation.
"""

import lazy_loader

# Each public name (listed in __init__.pyi) is imported on first use: a service pays only for
# the modules it uses (scikit-learn, skops and river each take a second or more to import).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
