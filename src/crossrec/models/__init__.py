"""Models: the Recommender contract, the registry, and every registered model.

Importing this package registers all models (an explicit import list, like cornac's).
"""

from crossrec.models import bitgcf, cmf, conet, crossrec, dtcdr, emcdr, itemknn, lightgcn, mf, neumf, pop, sasrec  # noqa: F401  (registration side effect)
from crossrec.models.base import REGISTRY, Batch, Sizes, build_model, config_from_dict, register
from crossrec.models.per_category import PerCategory

__all__ = ["REGISTRY", "Batch", "PerCategory", "Sizes", "build_model", "config_from_dict", "register"]
