"""api: the outer layer: the FastAPI service, its web pages, settings and the ``unionledger`` CLI.

What it is: routes per audience (admin, member, station, auditor, public), authentication,
RFC 9457 problem+json errors, the application factory :func:`api.app.create_app`, and the
command line. Routers only translate between HTTP and the packages below.

What it may import: anything: ``keys``, ``verifier``, ``ledger``, FastAPI, uvicorn. Nothing
imports ``api`` (keys <- verifier <- ledger <- api).
"""
