"""Names -> ready models: backbones and the official released adapters (pull, verify, convert, cache), Hub checkpoints
(push, hf://), and evaluation by name."""
