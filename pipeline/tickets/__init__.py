"""Ticket store: alerts from MQTT become tickets with a life cycle, served by a REST API.

Public entry points: :func:`pipeline.tickets.api.create_app`, :func:`pipeline.tickets.db.init_db`,
:class:`pipeline.tickets.consumer.AlertConsumer`. See ``docs/api.md``.
"""
