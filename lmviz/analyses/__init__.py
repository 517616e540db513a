"""The analyses: one module and one result dataclass each, computed from the model and its passes."""
