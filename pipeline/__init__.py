"""gridwatch: CCTV hazard detection for community grid governance.

Data flows one way: ingest -> detect -> analyze -> alerts -> tickets -> web.
Each stage talks to its neighbours only through small typed objects:
:class:`pipeline.ingest.frame.Frame`, :class:`pipeline.detect.detections.Detections`,
:class:`pipeline.analyze.incident.Incident` and the ticket models of :mod:`pipeline.tickets`.
"""

__version__ = "0.1.0"
