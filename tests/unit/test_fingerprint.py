"""The idempotency fingerprint: the standard library's sorted JSON, whichever encoder writes it.

Stored records keep their fingerprints across versions, so the bytes hashed
must never change: orjson is used only where it writes exactly what
`json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"))` writes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.commands import Payload
from settlement.service import fingerprint


def stdlib_fingerprint(event: str, fields: dict[str, Any]) -> str:
    text = json.dumps(
        {"event": event, "payload": fields},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_fingerprint_is_always_the_standard_librarys_sorted_json(fields: dict[str, Any]) -> None:
    assert fingerprint(Payload("propose", fields, "r1")) == stdlib_fingerprint("propose", fields)


def test_a_fingerprint_stored_by_an_earlier_version_still_matches() -> None:
    fields = {"decision": "dispute", "version": 3, "reason": 'trop élevé "x"\n'}
    assert fingerprint(Payload("respond", fields, "r1")) == (
        "3013dbec31be62f69106c1e2b3bddef7d7a2f206cb6cdc81c942302089e656ed"
    )
