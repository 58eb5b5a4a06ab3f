"""Deployment-target profiles: the schema and the YAML files shipped beside it."""

from slimline.profiles.schema import (
    BUDGET_METRICS,
    Budget,
    Measurement,
    Profile,
    Shape,
    Target,
    list_profiles,
    load_profile,
)

__all__ = ["BUDGET_METRICS", "Budget", "Measurement", "Profile", "Shape", "Target", "list_profiles",
           "load_profile"]
