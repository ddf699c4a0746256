"""Training data from operators' verdicts: export YOLO / COCO sets, import labels back (docs/retraining.md).

:mod:`.export` writes one set per hazard (split by camera, false alarms as negatives, a manifest);
:mod:`.label_import` reads CVAT / Label Studio exports (YOLO and COCO) back into a set.
"""
