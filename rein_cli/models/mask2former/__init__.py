"""The Mask2Former decode head (pure PyTorch): pixel decoder, masked-attention decoder, criterion."""

from rein_cli.models.mask2former.head import Mask2FormerHead

__all__ = ["Mask2FormerHead"]
