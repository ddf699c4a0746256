"""``gridwatch model train``: fine-tune a detector on an exported set and register it as a candidate.

:mod:`.plan` checks a request (no torch needed), :mod:`.run` trains with Ultralytics and exports ONNX,
:mod:`.card` writes the model card and the manifest entry, :mod:`.progress` is the Rich display.
"""
