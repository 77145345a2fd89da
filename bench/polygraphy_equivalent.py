"""What ``polygraphy run MODEL --onnxrt --onnx-outputs mark all`` does, as a bare process.

    python bench/polygraphy_equivalent.py MODEL.onnx BATCH.npy

Polygraphy is not installed here (and there is no network), so ``bench/bench_speed.py``
times this fresh interpreter as its stand-in: import onnx and onnxruntime, load the
model, mark every node output as a graph output (with shape inference first, as
Polygraphy's ONNX loader does), build an ONNX Runtime CPU session from the serialized
model, run the preprocessed batch once (all images in one call; the batch is read from
an ``.npy`` written beforehand, so neither side pays image decoding) and exit. Prints
the number of outputs fetched. Imports no parity code.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime


def mark_all(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every node output (that has a name) listed as a graph output."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    present = {o.name for o in inferred.graph.output}
    for node in inferred.graph.node:
        for name in node.output:
            if name and name not in present:
                inferred.graph.output.append(known.get(name) or onnx.ValueInfoProto(name=name))
                present.add(name)
    return inferred


def main(model_path: str, batch_path: str) -> int:
    model = mark_all(onnx.load(model_path))
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    batch = np.load(batch_path)
    feed = {session.get_inputs()[0].name: batch.astype(np.float32, copy=False)}
    outputs = session.run(None, feed)
    print(f"{len(outputs)} outputs, {sum(o.nbytes for o in outputs) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
