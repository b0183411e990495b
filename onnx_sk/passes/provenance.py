"""ProvenancePass: the written model says it was made by onnx-sk, which version, with which
options, and what produced the model it came from.

- ``producer_name`` = ``onnx-sk``, ``producer_version`` = onnx-sk's version;
- ``metadata_props`` (existing entries kept):
  ``onnx_sk.version``, ``onnx_sk.options`` (every optimize option by name, JSON with sorted keys,
  as the report's ``options``), ``onnx_sk.source_producer`` and
  ``onnx_sk.source_producer_version`` (the input's producer, e.g. ``pytorch`` / ``2.13.0``; a
  model that onnx-sk already rewrote keeps the first source's).

Runs only when an earlier pass changed the model: a model no pass changed is written unchanged,
byte for byte. Deterministic (the same input and options give the same entries).
"""

from __future__ import annotations

import json

import onnx

from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.runtime.machine import onnx_sk_version

PRODUCER = "onnx-sk"
PREFIX = "onnx_sk."


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    """Set ``key`` in ``metadata_props``, replacing an entry of that key."""
    for entry in model.metadata_props:
        if entry.key == key:
            entry.value = value
            return
    model.metadata_props.add(key=key, value=value)


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {e.key: e.value for e in model.metadata_props}


class ProvenancePass:
    name = "provenance"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if not ctx.modified:
            return PassResult(model, modified=False)
        props = metadata(model)
        if props.get(PREFIX + "source_producer") is None:  # first onnx-sk run on this model
            set_metadata(model, PREFIX + "source_producer", model.producer_name)
            set_metadata(model, PREFIX + "source_producer_version", model.producer_version)
        version = onnx_sk_version()
        set_metadata(model, PREFIX + "version", version)
        options = json.dumps(ctx.options.flat(), sort_keys=True, separators=(",", ":"))
        set_metadata(model, PREFIX + "options", options)
        model.producer_name, model.producer_version = PRODUCER, version
        return PassResult(model, modified=True)
