"""Names -> ready models: backbones and the official released adapters (pull, verify, convert, cache), Hub checkpoints
(push, hf://), and the checkpoints a model name means to an evaluation (resolve); the zoo resolves, it does not
evaluate."""
