"""The model and its parts: loading (models), placement, the embedded models, discovery and
verification of the parts (architectures, head, frozen_norm), the one seam into a pass (interventions)
and how much model work runs at once (compute)."""
