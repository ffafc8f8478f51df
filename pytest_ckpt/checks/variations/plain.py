"""``plain``: ``torch.save(model.state_dict())`` of the bare model."""

from .base import SaveSide

PLAIN = SaveSide()
