"""Every wire format can be verified from docs/ alone.

``ledger_verifier.py`` (from docs/formats.md and docs/keys.md) and ``qr_verifier.py`` (from
docs/credentials.md, docs/station.md and docs/keys.md) are independent implementations, written
from the documents without reading the code. **The rule: those two modules import nothing of the
repository** (no ``keys``, ``verifier``, ``ledger`` or ``api``): only the standard library, the
project's third-party dependencies, and each other. ``test_independence.py`` checks the rule.

The tests (``test_ledger_from_docs.py``, ``test_qr_from_docs.py``) start a real server with the
demo data and verify what it serves over HTTP with those modules only. The *harness*
(``conftest.py``: starting the server, pinning the root key out of band, a member's wallet making
a QR presentation, a station device signing records) may use the repository's code; the
*verification* may not. When the independent code disagrees with the server, the document, the
server or the independent reading is wrong: that is a finding to report, not to paper over.
"""
