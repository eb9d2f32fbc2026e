"""Reference device client: a phone-like outbox with push, pull and resumable uploads.

``outbox`` (local SQLite store), ``transport`` (HTTP, encodings, problem details), ``device``
(the loops an app runs), and the fleet simulator: ``fleet`` (``run_fleet``, ``main``),
``simdevice``, ``chaos``, ``content``, ``fleet_check``, ``staff``. See decision 0108.
"""
