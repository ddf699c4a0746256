"""Model evaluation shared by ``scripts/evaluate*.py`` and ``gridwatch model evaluate|promote``.

* :mod:`pipeline.evaluation.frames`: AP, frame-level operating point on a YOLO split (scripts/evaluate.py).
* :mod:`pipeline.evaluation.events`: labelled clips replayed and scored (scripts/evaluate_events.py).
* :mod:`pipeline.evaluation.benchmark`: a site's frozen benchmark, candidate vs. deployed, and the gate.
"""
