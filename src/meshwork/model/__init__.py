"""The typed resource model: one pydantic model per kind.

Importing this package is cheap: it loads the kind registry (names, groups,
versions) and no model. A kind's model is imported when first used
(``KindInfo.model``); ``REGISTRY.load_all()`` imports every one.
"""

from meshwork.model.kinds import REGISTRY, KindInfo, Registry

__all__ = ["REGISTRY", "KindInfo", "Registry"]
