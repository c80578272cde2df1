"""Other servers' protocols over the same pipeline, one module each: the Open Inference Protocol
(v2), KServe v1 and MLflow's scoring server."""
