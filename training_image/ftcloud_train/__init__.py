"""The ftcloud container: the training entrypoint (and, later, the serving endpoint).

Heavy imports (torch, transformers, peft) happen inside the functions that need them.
"""
