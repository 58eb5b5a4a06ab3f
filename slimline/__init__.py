"""slimline: compress, export and benchmark fine-tuned transformers against a target's budgets.

Importing this package stays cheap: it pulls in no torch, onnxruntime, tensorrt or bitsandbytes.
The leaf modules here (errors, artifact, deps, machine, data) are shared by the stage packages
`compress`, `export` and `bench`; the shell modules (cli, pipeline, demo) sit on top of them.
"""

__version__ = "0.1.0"
