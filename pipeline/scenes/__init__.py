"""State-classification scenes: a fixed crop of a camera plus a small ONNX image classifier, as configuration.

* :mod:`~pipeline.scenes.config` - ``scenes[]`` of the site YAML (:class:`SceneConfig`).
* :mod:`~pipeline.scenes.crop` - cutting a scene's crop out of a frame (the same for training and judging).
* :mod:`~pipeline.scenes.classifier` - running a trained scene model with onnxruntime.
* :mod:`~pipeline.scenes.rule` - :class:`StateRule`, the scene's hazard rule.
* :mod:`~pipeline.scenes.store` - the scene's crops and labels on disk.
* :mod:`~pipeline.scenes.train` - training without torch (frozen YOLO11n features + a numpy linear head).
* :mod:`~pipeline.scenes.web` - the labelling page.
* :mod:`~pipeline.scenes.cli` - ``gridwatch scene collect | train | list``.

See docs/scenes.md.
"""
