"""The serving side of the image: ``python -m ftcloud_train serve``.

One module per step, each testable without a socket:

* :mod:`.protocol` - the wire format (typed request/response models, validation errors that name the field);
* :mod:`.settings` - the environment knobs (names and defaults live in ``ftcloud.contract``);
* :mod:`.runner` - loads what training wrote and generates a batch (torch/transformers/peft, lazily);
* :mod:`.batcher` - the dynamic batcher (asyncio queue -> compatible batches -> one ``generate``);
* :mod:`.cache` - LRU + TTL result cache for deterministic requests;
* :mod:`.server` - the HTTP layer (FastAPI + uvicorn): binds the port first, loads the model after.

Nothing here imports torch at import time: the port must be bound before the slow imports start.
"""
