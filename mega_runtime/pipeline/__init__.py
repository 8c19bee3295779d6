"""The image/video chain: media, person detection, crops, tracking, temporal filtering and the one module
that knows the whole chain (:mod:`~mega_runtime.pipeline.chain`). torch is imported only where models run."""
