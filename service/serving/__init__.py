"""The request path, free of HTTP: the pipeline (resolve, run, mirror, record), the model pool
and hot swap, batching, routing, shadowing, validation and feedback."""
